"""The MCN training loop: one process on CPU or a GPU, or one rank of a torchrun / Ray Train job.

Per step: forward the rank's clips under autocast, update the online k-means with the fused vectors (all ranks
see the global batch and hold the same centroids), compute the losses (the contrastive matrix spans the global
batch), backward with DDP gradient averaging, clip (optional), Adam, warm-up + cosine schedule.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mcn.configs import config_to_dict, save_config
from mcn.errors import MCNError
from mcn.store import read_words
from mcn.train import checkpoint as ckpt
from mcn.train.config import TrainConfig, resolve_for_store
from mcn.train.data import TrainLoader, build_index
from mcn.train.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from mcn.train.kmeans import OnlineKMeans
from mcn.train.losses import MCNLoss, fused_embedding
from mcn.train.model import MCNModel
from mcn.train.run_log import RunLog, plot_losses

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
VIDEO_DIM = 4096  # 2048-d 2D + 2048-d 3D features (the store's fixed widths)
# Settings a resumed run must share with its checkpoint (None: the whole section): the weights, the k-means
# state and the queue's shape depend on them.
RESUME_FIXED = {
    "model": None,
    "data": ("batch_videos", "num_clips"),
    "kmeans": ("enabled", "num_clusters", "queue_steps"),
}


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor: linear 0 -> 1 over the warm-up, then half a cosine down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Model inputs on the device: float32 features (audio travels as float16), nframes, word vectors."""
    return {
        "video": batch["video"].to(device, non_blocking=True).float(),
        "audio": batch["audio"].to(device, non_blocking=True).float(),
        "nframes": batch["nframes"].to(device, non_blocking=True),
        "text": batch["text"].to(device, non_blocking=True).float(),
    }


def autocast_for(config: TrainConfig, device: torch.device):
    if config.precision.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[config.precision.dtype])


def compute_losses(
    model: nn.Module, loss_fn: MCNLoss, kmeans: OnlineKMeans | None, inputs: dict[str, torch.Tensor], autocast
) -> dict[str, torch.Tensor]:
    """Forward, online k-means on the fused vectors (outside autocast, in float32), then the loss terms."""
    with autocast:
        outputs = model(inputs)
    centroids = labels = None
    if kmeans is not None:
        labels = kmeans.step(fused_embedding(outputs))
        centroids = kmeans.centroids
    with autocast:
        return loss_fn(outputs, centroids, labels)


@dataclass
class TrainState:
    """The objects of a run; ``model`` is the raw module, ``engine`` the one that is called (DDP / compiled)."""

    config: TrainConfig
    info: DistInfo
    model: MCNModel
    engine: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    kmeans: OnlineKMeans | None
    loss_fn: MCNLoss
    loader: TrainLoader
    total_steps: int
    step: int = 0


def build(config: TrainConfig, info: DistInfo) -> tuple[TrainConfig, TrainState, list[str]]:
    """Resolve the config against the store and build model, optimizer, schedule, k-means and loader."""
    if not config.data.store:
        raise MCNError("no feature store given; pass --store STORE (made by `mcn extract`)")
    if config.precision.dtype == "fp16" and info.device.type != "cuda":
        raise MCNError("fp16 autocast needs a GPU; use --precision bf16 or fp32 on the CPU")
    index = build_index(config.data.store)
    config, notes = resolve_for_store(config, read_words(config.data.store).dim, VIDEO_DIM)
    seed_everything(config.seed)
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.precision.tf32
        torch.backends.cudnn.allow_tf32 = config.precision.tf32
        torch.backends.cudnn.benchmark = config.precision.cudnn_benchmark
    data = config.data
    loader = TrainLoader(
        data.store,
        data.clip_options(),
        data.batch_videos,
        config.seed,
        info.rank,
        info.world_size,
        data.num_workers,
        data.prefetch_factor,
        pin_memory=info.device.type == "cuda",
        index=index,
    )
    if index.num_skipped:
        notes.append(f"{index.num_skipped} videos without captions are skipped")
    total_steps = config.schedule.epochs * loader.batches_per_epoch
    if config.schedule.max_steps:
        total_steps = min(total_steps, config.schedule.max_steps)
    model = MCNModel(config.model).to(info.device)
    engine: nn.Module = model
    if info.is_distributed:
        if config.sync_batchnorm:
            if info.device.type != "cuda":
                raise MCNError(
                    "sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); turn it off"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        engine = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    if config.precision.compile:
        engine = torch.compile(engine)
    optim = config.optim
    fused = {"fused": True} if optim.fused and info.device.type == "cuda" else {}
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        **fused,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.schedule.warmup_steps, total_steps)
    )
    scaler = torch.amp.GradScaler(info.device.type, enabled=config.precision.dtype == "fp16")
    km = config.kmeans
    kmeans = None
    if km.enabled:
        kmeans = OnlineKMeans(
            km.num_clusters,
            km.queue_steps,
            data.num_clips,
            max(1, data.num_clips // 2),
            km.fit_every,
            km.max_iter,
            km.tol,
            seed=config.seed,
        )
    loss_fn = MCNLoss(cluster_weight=km.weight if km.enabled else 0.0, cluster_fused_only=km.fused_only)
    state = TrainState(
        config, info, model, engine, optimizer, scheduler, scaler, kmeans, loss_fn, loader, total_steps
    )
    return config, state, notes


def trainer_state(state: TrainState) -> dict:
    return {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "kmeans": state.kmeans.state_dict() if state.kmeans is not None else {},
        "loader": state.loader.state_dict(),
        "step": state.step,
    }


def save_checkpoint(state: TrainState, run_dir: Path) -> Path:
    """Every rank writes its random state, rank 0 the rest; then rank 0 publishes the folder."""
    info, folder = state.info, ckpt.staging_dir(run_dir, state.step)
    if info.is_main:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    barrier(info)
    ckpt.write_rank_state(folder, info.rank)
    barrier(info)
    final = ckpt.checkpoint_root(run_dir) / ckpt.step_name(state.step)
    if info.is_main:
        ckpt.write_main_state(
            folder,
            state.model.state_dict(),
            trainer_state(state),
            config_to_dict(state.config),
            state.step,
            state.loader.epoch,
        )
        ckpt.publish(run_dir, state.step, state.config.checkpoint.keep_last)
    barrier(info)
    return final


def resume_mismatches(saved: dict, config: TrainConfig) -> list[str]:
    """``section.key saved -> now`` for every setting of :data:`RESUME_FIXED` that differs from the checkpoint's."""
    current = config_to_dict(config)
    found = []
    for section, names in RESUME_FIXED.items():
        theirs, mine = saved.get(section) or {}, current[section]
        for name in names or mine:
            if name in theirs and theirs[name] != mine[name]:
                found.append(f"{section}.{name} {theirs[name]} -> {mine[name]}")
    return found


def restore(state: TrainState, folder: Path) -> None:
    saved = ckpt.load_training_state(folder, state.info.rank, map_location=state.info.device)
    changed = resume_mismatches(saved["config"], state.config)
    if changed:
        raise MCNError(
            f"cannot resume {folder} with other settings ({'; '.join(changed)}); drop the flags that change "
            "them, or start a new run in another --out"
        )
    state.model.load_state_dict(saved["model"])
    trainer = saved["trainer"]
    state.optimizer.load_state_dict(trainer["optimizer"])
    state.scheduler.load_state_dict(trainer["scheduler"])
    state.scaler.load_state_dict(trainer["scaler"])
    if state.kmeans is not None:
        state.kmeans.load_state_dict(trainer["kmeans"], device=state.info.device)
    state.loader.load_state_dict(trainer["loader"])
    state.step = int(trainer["step"])
    ckpt.set_rng_state(saved["rng"])


def train_step(state: TrainState, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    config = state.config
    inputs = to_device(batch, state.info.device)
    state.optimizer.zero_grad(set_to_none=True)
    terms = compute_losses(
        state.engine, state.loss_fn, state.kmeans, inputs, autocast_for(config, state.info.device)
    )
    state.scaler.scale(terms["loss"]).backward()
    if config.optim.grad_clip:
        state.scaler.unscale_(state.optimizer)
        terms["grad_norm"] = nn.utils.clip_grad_norm_(state.model.parameters(), config.optim.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return terms


def train(
    config: TrainConfig, run_dir: str | Path, resume: bool = False, info: DistInfo | None = None
) -> dict:
    """Train until the schedule ends (or ``max_steps``); returns a summary. Checkpoints go to RUN/checkpoints."""
    info = info if info is not None else init_distributed(config.device)
    run_dir = Path(run_dir)
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None and not resume:
        raise MCNError(
            f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out"
        )
    config, state, notes = build(config, info)
    if latest is not None:
        restore(state, latest)
        notes.append(f"resumed from {latest} (step {state.step})")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")
    barrier(info)
    if info.is_main:
        for note in notes:
            logger.info(note)
    log_cfg = config.logging
    log = RunLog(run_dir, info.is_main, state.total_steps, state.step, log_cfg.progress, log_cfg.tensorboard)
    clips_per_step = config.data.batch_videos * config.data.num_clips
    last_time, last_step, terms = time.perf_counter(), state.step, {}
    try:
        while state.step < state.total_steps:
            for batch in state.loader:
                if state.loader.batches_done == 1 and state.kmeans is not None:
                    state.kmeans.reset_epoch()
                terms = train_step(state, batch)
                state.step += 1
                log.advance()
                end_of_epoch = state.loader.batches_done == state.loader.batches_per_epoch
                if state.step % log_cfg.every_steps == 0 or end_of_epoch or state.step == state.total_steps:
                    now = time.perf_counter()
                    metrics = all_reduce_mean({k: float(v.detach()) for k, v in terms.items()}, info)
                    metrics["lr"] = state.scheduler.get_last_lr()[0]
                    metrics["clips_per_s"] = (
                        clips_per_step * (state.step - last_step) / max(now - last_time, 1e-9)
                    )
                    log.log(state.step, state.loader.epoch, metrics)
                    last_time, last_step = now, state.step
                epoch_save = end_of_epoch and config.checkpoint.at_epoch_end
                if (
                    state.step % config.checkpoint.every_steps == 0
                    or epoch_save
                    or state.step == state.total_steps
                ):
                    save_checkpoint(state, run_dir)
                if state.step >= state.total_steps:
                    break
    finally:
        log.close()
    plot = plot_losses(run_dir) if info.is_main and log_cfg.plot else None
    return {
        "steps": state.step,
        "epoch": state.loader.epoch,
        "loss": float(terms["loss"].detach()) if terms else float("nan"),
        "checkpoint": str(ckpt.latest_checkpoint(run_dir)),
        "plot": str(plot) if plot else None,
    }
