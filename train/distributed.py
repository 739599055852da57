"""Process-group plumbing: one :func:`init_distributed` that returns a frozen description of this process.

Single process (no ``WORLD_SIZE`` in the environment): rank 0 of 1, no process group. Under ``torchrun`` (or
Ray Train, which creates the group itself) the group is joined once, with NCCL on GPUs and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mcn.errors import MCNError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` = this rank's GPU when CUDA is available, else the CPU; ``cuda`` = this rank's GPU;
    ``cuda:N`` = GPU N (one process only: with several ranks each takes its local GPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda"):
        return torch.device(device)
    if not torch.cuda.is_available():
        raise MCNError(f"device {device!r} was asked for but no GPU is visible; use --device cpu or auto")
    chosen = torch.device(device)
    if chosen.index is None:
        chosen = torch.device("cuda", local_rank)
    elif world_size > 1:
        raise MCNError(
            f"--device {device} names one GPU, but this run has {world_size} processes; use --device cuda "
            "(each process takes its local GPU) and pick GPUs with CUDA_VISIBLE_DEVICES"
        )
    if chosen.index >= torch.cuda.device_count():
        raise MCNError(
            f"GPU {chosen.index} was asked for but {torch.cuda.device_count()} are visible "
            f"(process {local_rank} on this machine); use a smaller index or fewer processes per machine"
        )
    return chosen


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        chosen = pick_device(device, local_rank, world_size)
    else:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank = int(os.environ.get("RANK", 0))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        chosen = pick_device(device, local_rank, world_size)
        if world_size > 1:
            backend = "nccl" if chosen.type == "cuda" else "gloo"
            extra = {"device_id": chosen} if chosen.type == "cuda" else {}
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **extra)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=chosen)


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging only)."""
    if not info.is_distributed or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return dict(zip(names, (tensor / info.world_size).tolist()))


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
