"""Process-group plumbing in one process: the device choice, the frozen description, no-op collectives.
(Two processes: tests/test_train_ddp.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mcn.errors import MCNError
from mcn.train import distributed
from mcn.train.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, pick_device


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend two GPUs are visible (only the device choice is tested, nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(MCNError, match="no GPU is visible; use --device cpu"):
        pick_device("cuda")
    with pytest.raises(MCNError, match="no GPU"):
        pick_device("cuda:0")


def test_cuda_is_each_process_local_gpu_and_cuda_n_one_gpu(two_gpus):
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MCNError, match="names one GPU, but this run has 2 processes"):
        pick_device("cuda:1", local_rank=0, world_size=2)
    with pytest.raises(MCNError, match="GPU 5 was asked for but 2 are visible"):
        pick_device("cuda:5")
    with pytest.raises(MCNError, match="GPU 2 was asked for"):
        pick_device("cuda", local_rank=2, world_size=3)  # three processes on a two-GPU machine


def test_one_process_without_a_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert info.is_main and not info.is_distributed
    assert not torch.distributed.is_initialized()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.rank = 1
    barrier(info)  # nothing to wait for
    assert all_reduce_mean({"loss": 2.0, "lr": 0.1}, info) == {"loss": 2.0, "lr": 0.1}
    distributed.close_distributed()  # a no-op without a group


def test_a_worker_that_is_not_rank_zero_is_not_main():
    info = DistInfo(rank=1, local_rank=1, world_size=2, device=torch.device("cpu"))
    assert not info.is_main and info.is_distributed
