"""``mcn train --ray``: the training loop under Ray Train's TorchTrainer on a local CPU Ray."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from train_store import make_store

from mcn.errors import MCNError
from mcn.train import checkpoint as ckpt
from mcn.train import config as presets
from mcn.train.ray_train import train_with_ray


def test_no_workers_is_a_user_error_before_ray_starts(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("Ray must not start"))
    with pytest.raises(MCNError, match="--num-workers must be >= 1"):
        train_with_ray(presets.tiny(), tmp_path / "run", resume=False, num_workers=0)


@pytest.mark.slow
def test_one_ray_train_worker_trains_and_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_store(tmp_path / "store", [4, 4], seconds=8)
    config = presets.tiny()
    config = replace(
        config,
        data=replace(config.data, store=str(tmp_path / "store")),
        schedule=replace(config.schedule, max_steps=2),
        device="auto",  # no GPU in the cluster: the workers train on the CPU
    )
    run = tmp_path / "run"
    summary = train_with_ray(config, run, resume=False, num_workers=1)
    assert summary["steps"] == 2 and summary["checkpoint"].endswith("step-000002")
    assert summary["loss"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    trainer = torch.load(ckpt.latest_checkpoint(run) / "trainer.pt", weights_only=True)
    assert trainer["step"] == 2 and trainer["loader"]["world_size"] == 1
    assert (tmp_path / ".ray").is_dir()  # Ray Train's own results sit next to the run folder
