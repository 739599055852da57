"""The training job's typed config: frozen, keyword-only nested dataclasses validated on construction, and presets.

Presets: :func:`reference` (the spec's recipe), :func:`demo_cpu` (a few-minute CPU run on the sample corpus),
:func:`sample_tiny` (the same for the tiny sample corpus) and :func:`tiny` (tests). Change a preset with
``dataclasses.replace`` or :func:`mcn.configs.apply_overrides` (``{"optim.lr": 3e-4}``). The word-vector size is
resolved from the store's word table when training starts (:func:`resolve_for_store`), so a GloVe-50 store
trains a 50-d text branch without editing the preset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from mcn.errors import MCNError
from mcn.train import model as model_presets
from mcn.train.clips import ClipOptions
from mcn.train.model import ModelConfig

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where clips come from and how they are cut. ``batch_videos`` is the global batch (all ranks together)."""

    store: str = ""
    batch_videos: int = 128
    num_clips: int = 32  # clips per video (n_pair)
    min_time: float = 10.0
    max_frames: int = 1000
    max_words: int = 20
    clamp_audio_start: bool = True  # False = the reference's negative-start slice
    num_workers: int = 8  # loader processes per rank
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        if self.batch_videos < 1:
            raise MCNError(f"data.batch_videos must be >= 1, got {self.batch_videos}")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise MCNError(
                f"data.num_workers must be >= 0 and data.prefetch_factor >= 1, got {self.num_workers} and "
                f"{self.prefetch_factor}"
            )
        self.clip_options()  # validates the clip fields

    def clip_options(self) -> ClipOptions:
        return ClipOptions(
            num_clips=self.num_clips,
            min_time=self.min_time,
            max_frames=self.max_frames,
            max_words=self.max_words,
            clamp_audio_start=self.clamp_audio_start,
        )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global grad norm; 0 = no clipping (the reference)
    fused: bool = False  # fused Adam kernel (CUDA only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise MCNError(
                "optim.lr and optim.eps must be > 0; optim.weight_decay and optim.grad_clip >= 0 (got lr="
                f"{self.lr}, eps={self.eps}, weight_decay={self.weight_decay}, grad_clip={self.grad_clip})"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise MCNError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Linear warm-up then half-cosine to 0 over all steps, stepped per iteration."""

    epochs: int = 30
    warmup_steps: int = 5000
    max_steps: int = 0  # > 0 stops (and ends the cosine) after this many steps

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.warmup_steps < 0 or self.max_steps < 0:
            raise MCNError(
                "schedule.epochs must be >= 1, schedule.warmup_steps and schedule.max_steps >= 0 (got "
                f"{self.epochs}, {self.warmup_steps}, {self.max_steps})"
            )


@dataclass(frozen=True, kw_only=True)
class KMeansConfig:
    """Online k-means on the fused embeddings (the spec's clustering loss)."""

    enabled: bool = True
    num_clusters: int = 256
    queue_steps: int = 20  # steps of fused vectors kept in the queue
    fit_every: int = 20  # steps between full fits
    max_iter: int = 100
    tol: float = 1e-4  # squared centroid shift that stops a fit
    weight: float = 1.0  # weight of cluster_loss in the total
    fused_only: bool = False  # the reference's `mean=1` variant: one cross-entropy on the fused vector

    def __post_init__(self) -> None:
        if self.num_clusters < 1 or self.queue_steps < 0 or self.fit_every < 1 or self.max_iter < 1:
            raise MCNError(
                "kmeans.num_clusters, kmeans.fit_every and kmeans.max_iter must be >= 1, kmeans.queue_steps >= 0"
            )
        if self.tol < 0 or self.weight < 0:
            raise MCNError(f"kmeans.tol and kmeans.weight must be >= 0, got {self.tol} and {self.weight}")


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig:
    dtype: str = "fp16"  # autocast dtype; fp16 uses a GradScaler
    tf32: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False  # torch.compile the model

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise MCNError(f"precision.dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    every_steps: int = 1000  # also saved at the end of the run
    keep_last: int = 3
    at_epoch_end: bool = True  # also save at the end of every epoch

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.keep_last < 1:
            raise MCNError(
                f"checkpoint.every_steps and checkpoint.keep_last must be >= 1, got {self.every_steps} and "
                f"{self.keep_last}"
            )


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    every_steps: int = 10  # JSONL / TensorBoard interval
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = True
    plot: bool = True  # loss-curve PNG at the end

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise MCNError(f"logging.every_steps must be >= 1, got {self.every_steps}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=model_presets.reference)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 1
    device: str = "auto"  # auto = the local GPU if there is one; cpu, cuda (each rank's local GPU), cuda:N
    # Batch-norm statistics over the global batch (GPUs only). Off = per-rank statistics, as the reference's
    # DataParallel replicas computed them.
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise MCNError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.kmeans.enabled and self.kmeans.queue_steps and self.data.num_clips < 2:
            raise MCNError(
                "the k-means queue keeps half of each video's clips; use data.num_clips >= 2 (--num-clips) "
                "or kmeans.queue_steps=0"
            )
        clips_per_batch = self.data.batch_videos * self.data.num_clips
        if self.kmeans.enabled and self.kmeans.num_clusters > clips_per_batch:
            raise MCNError(
                f"kmeans.num_clusters {self.kmeans.num_clusters} exceeds the {clips_per_batch} clips of a global "
                "batch (data.batch_videos x data.num_clips), which every epoch's first fit starts from; lower "
                "--num-clusters or raise --batch-videos / --num-clips"
            )


def reference() -> TrainConfig:
    """The spec's recipe: Adam 1e-4, warm-up 5000 then cosine, 30 epochs, 128 videos x 32 clips, K=256, fp16."""
    return TrainConfig()


def demo_cpu() -> TrainConfig:
    """A small model that trains on the sample corpus in a few minutes on 2 CPU cores.

    The sample videos are 10-15 s of 2-3 narrated steps, so clips are merged to >= 3 s (one step) instead of the
    reference's 10 s (which would make every clip the whole video), and 4 clips are drawn per video.
    """
    return TrainConfig(
        data=DataConfig(batch_videos=16, num_clips=4, min_time=3.0, max_frames=1000, num_workers=1),
        model=replace(model_presets.tiny(), video_dim=4096, embed_dim=128, recon_hidden=64),
        schedule=ScheduleConfig(epochs=1000, warmup_steps=20, max_steps=300),
        kmeans=KMeansConfig(num_clusters=16, queue_steps=4, fit_every=4, max_iter=20),
        precision=PrecisionConfig(dtype="fp32", tf32=False, cudnn_benchmark=False),
        checkpoint=CheckpointConfig(every_steps=100, keep_last=2, at_epoch_end=False),
        logging=LoggingConfig(every_steps=5),
        optim=OptimConfig(lr=1e-3),
        device="cpu",
    )


def sample_tiny() -> TrainConfig:
    """:func:`demo_cpu` for the tiny sample corpus (steps of ~2 s, 144p-180p, random-init tiny extractors).

    Clips are one step (``min_time`` 1.5 s); the video features are standardised (``video_batchnorm``), since
    random-init features carry colour and shape in low-variance directions; a learning rate of 3e-4 keeps the
    online k-means loss from blowing up (at 1e-3 its raw dot products grow tenfold mid-run), and weight decay
    0.1 keeps the model from memorising its ~100 training videos.
    """
    config = demo_cpu()
    return replace(
        config,
        data=replace(config.data, min_time=1.5),
        model=replace(config.model, video_batchnorm=True),
        optim=replace(config.optim, lr=3e-4, weight_decay=0.1),
        schedule=replace(config.schedule, max_steps=600),
    )


def tiny() -> TrainConfig:
    """Seconds-long CPU runs for tests."""
    return TrainConfig(
        data=DataConfig(batch_videos=4, num_clips=4, max_frames=200, max_words=8, num_workers=0),
        model=replace(model_presets.tiny(), video_dim=4096),
        optim=OptimConfig(lr=1e-3),
        schedule=ScheduleConfig(epochs=2, warmup_steps=2, max_steps=0),
        kmeans=KMeansConfig(num_clusters=4, queue_steps=2, fit_every=2, max_iter=10),
        precision=PrecisionConfig(dtype="fp32", tf32=False, cudnn_benchmark=False),
        checkpoint=CheckpointConfig(every_steps=2, keep_last=2),
        logging=LoggingConfig(every_steps=1, progress=False, tensorboard=False, plot=False),
        device="cpu",
    )


PRESETS = {"reference": reference, "demo_cpu": demo_cpu, "sample_tiny": sample_tiny, "tiny": tiny}


def resolve_for_store(config: TrainConfig, word_dim: int, video_dim: int) -> tuple[TrainConfig, list[str]]:
    """The config with the model's input sizes taken from the store; returns notes about what changed."""
    notes = []
    model = config.model
    if model.word_dim != word_dim:
        notes.append(f"model.word_dim {model.word_dim} -> {word_dim} (the store's word vectors)")
        model = replace(model, word_dim=word_dim)
    if model.video_dim != video_dim:
        notes.append(f"model.video_dim {model.video_dim} -> {video_dim} (the store's 2D + 3D features)")
        model = replace(model, video_dim=video_dim)
    return replace(config, model=model), notes
