"""Data parallelism on CPU (gloo): two ranks give the loss, gradients and centroids of one process on the same
global batch; `torchrun -m mcn.train` runs end to end, from a local store or one in a bucket, and checkpoints every
rank's random state."""

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from train_store import store_fixture, train_env

from mcn.store import copy_store
from mcn.train import config as presets
from mcn.train.distributed import DistInfo, close_distributed, init_distributed
from mcn.train.trainer import build, compute_losses, to_device

store = store_fixture([4, 4])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_step(store: str, info: DistInfo) -> dict:
    """Losses, gradients and centroids of the first training step of the tiny recipe."""
    config = presets.tiny()
    config = replace(config, data=replace(config.data, store=store, batch_videos=4))
    config, state, _ = build(config, info)
    # Batch norm normalises with each rank's own batch statistics in training mode (as the reference's
    # DataParallel replicas did), so the exact comparison runs the audio trunk with fixed statistics.
    state.model.eval()
    batch = next(iter(state.loader))
    terms = compute_losses(
        state.engine, state.loss_fn, state.kmeans, to_device(batch, info.device), contextlib.nullcontext()
    )
    terms["loss"].backward()
    return {
        "terms": {k: v.detach() for k, v in terms.items()},
        "grads": {n: p.grad.detach().clone() for n, p in state.model.named_parameters()},
        "centroids": state.kmeans.centroids.clone(),
        "video_index": batch["video_index"],
    }


def rank_worker(rank: int, world_size: int, port: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.device.type) == (rank, world_size, "cpu")
    try:
        torch.save(first_step(store, info), os.path.join(out_dir, f"rank-{rank}.pt"))
    finally:
        close_distributed()


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_global_batch(store, tmp_path):
    mp.spawn(rank_worker, args=(2, free_port(), str(store), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=True) for r in range(2)]
    torch.set_num_threads(1)
    single = first_step(str(store), DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu")))

    # the ranks' halves together are the single process's batch, in rank order
    assert torch.equal(torch.cat([r["video_index"] for r in ranks]), single["video_index"])
    # contrastive loss spans the global batch on every rank; the per-clip terms average over ranks
    for rank in ranks:
        torch.testing.assert_close(
            rank["terms"]["contrastive_loss"], single["terms"]["contrastive_loss"], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(rank["centroids"], single["centroids"], rtol=1e-5, atol=1e-6)
    assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])
    for name in ("cluster_loss", "reconstruction_loss"):
        mean = (ranks[0]["terms"][name] + ranks[1]["terms"][name]) / 2
        torch.testing.assert_close(mean, single["terms"][name], rtol=1e-5, atol=1e-6)
    # DDP-averaged gradients equal the single-process gradients, and are identical across ranks
    for name, grad in single["grads"].items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def run_torchrun(store: str, run: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m mcn.train``: two gloo ranks, two steps of the tiny recipe."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-port", str(free_port()), "-m", "mcn.train"]
    command = [*torchrun, "--store", store, "--out", str(run), "--preset", "tiny", "--max-steps", "2"]
    command.append("--no-progress")
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=train_env())


def assert_two_ranks_trained_two_steps(result: subprocess.CompletedProcess, run: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run / "checkpoints" / "step-000002"
    assert (folder / "rng-rank-0.pt").exists() and (folder / "rng-rank-1.pt").exists()
    trainer = torch.load(folder / "trainer.pt", weights_only=True)
    assert trainer["loader"]["world_size"] == 2 and trainer["step"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    assert result.stdout.count("trained 2 steps") == 1  # printed by rank 0 only


@pytest.mark.slow
def test_torchrun_entry_point_trains_and_checkpoints_every_rank(store, tmp_path):
    run = tmp_path / "run"
    assert_two_ranks_trained_two_steps(run_torchrun(str(store), run), run)


@pytest.mark.slow
def test_torchrun_trains_from_a_store_in_a_bucket(store, s3_bucket, tmp_path):
    url = f"{s3_bucket}/stores/train"
    copy_store(store, url)
    run = tmp_path / "run"  # the run folder stays local
    assert_two_ranks_trained_two_steps(run_torchrun(url, run), run)
    assert json.loads((run / "config.json").read_text())["data"]["store"] == url
