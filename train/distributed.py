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


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` = this rank's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        chosen = pick_device(device, local_rank)
    else:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank = int(os.environ.get("RANK", 0))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        chosen = pick_device(device, local_rank)
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
