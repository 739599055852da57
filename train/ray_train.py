"""``mcn train --ray``: the same training loop, one copy per Ray Train worker (``TorchTrainer``).

Ray starts the workers, places one GPU on each when the cluster has GPUs, and creates the process group;
:func:`mcn.train.trainer.train` then runs unchanged. Checkpoints, metrics and the config go to the run folder,
which must be on storage every worker can reach (a shared filesystem on a multi-node cluster). The store may be
in object storage: the driver's S3 endpoint, credentials and region then go to the workers with their runtime
environment, as workers on another node do not inherit the driver's environment.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from mcn import storage
from mcn.configs import config_from_dict, config_to_dict
from mcn.errors import MCNError
from mcn.train.checkpoint import latest_checkpoint, read_meta
from mcn.train.config import TrainConfig
from mcn.train.run_log import read_metrics


def _worker_loop(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from mcn.train.distributed import DistInfo
    from mcn.train.trainer import train

    # a worker process starts with Python's default logging; log like the driver does
    logging.basicConfig(level=loop_config["log_level"], format="%(levelname)s %(name)s: %(message)s")
    context = ray.train.get_context()
    info = DistInfo(
        rank=context.get_world_rank(),
        local_rank=context.get_local_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
    )
    config = config_from_dict(TrainConfig, loop_config["config"])
    train(config, loop_config["run_dir"], loop_config["resume"], info)


def worker_env_vars(store: storage.StorePath) -> dict[str, str]:
    """The driver's :data:`mcn.storage.STORE_ENV_VARS` that are set, when ``store`` is a URL (the workers need
    them to reach it)."""
    return storage.store_env() if storage.is_remote(store) else {}


def train_with_ray(
    config: TrainConfig, run_dir: str | Path, resume: bool, num_workers: int, address: str | None = None
) -> dict:
    """Run :func:`mcn.train.trainer.train` on ``num_workers`` Ray Train workers; returns the run's summary."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 1:
        raise MCNError(f"--num-workers must be >= 1, got {num_workers}")
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    try:
        use_gpu = config.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
        config = replace(config, device="cuda" if use_gpu else "cpu")
        run_dir = Path(run_dir).resolve()
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={
                "config": config_to_dict(config),
                "run_dir": str(run_dir),
                "resume": resume,
                "log_level": logging.getLogger().getEffectiveLevel(),
            },
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(
                name=run_dir.name,
                storage_path=str(run_dir.parent / ".ray"),
                worker_runtime_env={"env_vars": worker_env_vars(config.data.store)},
            ),
        )
        trainer.fit()
    finally:
        ray.shutdown()
    latest = latest_checkpoint(run_dir)
    records = read_metrics(run_dir)
    return {
        "steps": read_meta(latest)["step"] if latest else 0,
        "loss": records[-1]["loss"] if records else float("nan"),
        "checkpoint": str(latest),
    }
