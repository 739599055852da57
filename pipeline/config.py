"""The extraction job's typed config: Ray resources, stage sizes, shard bounds, ASR; presets as functions.

Every batch-size or concurrency default carries a one-line reason. The per-video feature recipe (decoding, model
names, weights, word vectors, batch sizes inside a model call) is :class:`mcn.extract.ExtractConfig`; this
config adds what only a job over many videos needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mcn import extract, storage
from mcn.errors import MCNError
from mcn.extract import ExtractConfig
from mcn.extract.asr import AsrConfig
from mcn.extract.constants import CLIP_FRAMES


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """Where the job runs: a local Ray started for it (default) or an existing cluster."""

    address: str | None = None  # None: $RAY_ADDRESS when set (as under `ray job submit`), else a local Ray
    num_cpus: int | None = None  # local Ray only; None = every core of this machine
    num_gpus: int | None = None  # local Ray only; None = let Ray detect them
    log_to_driver: bool = False  # worker logs stay in Ray's log files; the progress bar stays readable

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise MCNError(
                f"ray.num_cpus must be >= 1 (got {self.num_cpus}); leave it unset to use every core"
            )


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """How much of each stage runs at once. None = derived from the cluster's resources at start.

    The models' batch sizes are the extraction config's (``extract.runtime.batch_2d`` frames, ``batch_3d``
    clips): the driver fills every model call up to them with pieces of windows of any videos, whatever the
    window length.
    """

    # One decode task per CPU: decoding is the bottleneck (features.md), so every core decodes.
    decode_tasks: int | None = None
    # Frame memory between decoding and the models, in full windows (≈35 MB each at 30 s; a shorter window, e.g.
    # a whole short video, counts its share): 16 hold 480 s of video, a full 2D and 3D batch for a few model
    # actors at the default batch sizes, and keep object-store memory under ~1 GB.
    windows_in_flight: int = 16
    # A batch that is not full goes to an idle model once its oldest frame has waited this long: bounds the wait
    # at the end of the job, while decoders (a window every few seconds each) usually fill it first.
    batch_wait_s: float = 1.0
    # Windows a decode task may run ahead of the driver: one to hand over, one being decoded.
    decode_lookahead: int = 2
    # One actor per model per GPU keeps each GPU fed (≈1,000 video-s per GPU-second); on CPU one each, since
    # the cores are needed for decoding.
    actors_2d: int | None = None
    actors_3d: int | None = None
    # Whisper base on CPU transcribes ≈10x real time per core; one actor is plenty next to decoding.
    actors_asr: int = 1
    # Two model actors (2D + 3D) share each GPU.
    gpus_per_model_actor: float = 0.5
    # Model actors reserve no CPU slot: on GPU they mostly wait on the device, on CPU they would otherwise
    # block decode tasks from being scheduled (the OS shares the cores between them).
    cpus_per_model_actor: float = 0.0
    # One intra-op thread per actor: with one decode task per core, more threads only oversubscribe the CPU.
    torch_threads: int = 1
    # Ray re-sends a dead model actor's call this often (a pure function of its frames) before the driver
    # re-queues the videos the call held: a restart costs seconds, a re-queued video its whole decode.
    model_call_retries: int = 2
    # A video whose worker died this many times is recorded as a failure instead of being retried again.
    max_attempts: int = 3

    def __post_init__(self) -> None:
        for name in ("decode_tasks", "actors_2d", "actors_3d"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MCNError(f"stages.{name} must be >= 1 (got {value}); leave it unset for the default")
        if self.windows_in_flight < 1 or self.decode_lookahead < 1 or self.actors_asr < 1:
            raise MCNError("stages.windows_in_flight, decode_lookahead and actors_asr must be >= 1")
        if self.torch_threads < 1 or self.max_attempts < 1:
            raise MCNError("stages.torch_threads and stages.max_attempts must be >= 1")
        if self.batch_wait_s < 0 or self.model_call_retries < 0:
            raise MCNError("stages.batch_wait_s and stages.model_call_retries must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """Shard bounds: a shard closes at whichever limit comes first, and always holds whole videos."""

    # 1,000 videos ≈ 10 k features per shard file: few files for the trainer's shard list, and a crash
    # loses at most one shard of work.
    max_videos: int = 1000
    # 1 GiB: big enough for efficient sequential reads, small enough to buffer in the driver.
    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.max_videos < 1 or self.max_bytes < 1:
            raise MCNError("shards.max_videos and shards.max_bytes must be >= 1")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything one `mcn extract` run needs. Presets leave ``input`` and ``out`` empty; the run sets them."""

    input: str = ""
    out: str = ""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    stages: StageConfig = field(default_factory=StageConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    retry_failed: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.input and self.out and _same_place(self.input, self.out):
            raise MCNError("the output store must not be the input folder; pass a new folder to --out")
        decode, runtime = self.extract.decode, self.extract.runtime
        seconds_in_flight = self.stages.windows_in_flight * decode.window_seconds
        if (
            seconds_in_flight * decode.rate_2d < runtime.batch_2d
            or seconds_in_flight * decode.rate_3d < CLIP_FRAMES * runtime.batch_3d
        ):
            raise MCNError(
                f"stages.windows_in_flight={self.stages.windows_in_flight} windows of "
                f"{decode.window_seconds:g} s cannot fill one model batch (extract.runtime.batch_2d="
                f"{runtime.batch_2d} frames, batch_3d={runtime.batch_3d} clips): raise windows_in_flight"
            )

    def check_paths(self) -> None:
        """Before a run: both paths are given."""
        if not self.input or not self.out:
            raise MCNError("give both the input (folder or manifest) and the output store folder (--out)")


def _same_place(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def default() -> PipelineConfig:
    """The reference recipe (ResNet-152 + ResNeXt-101 with the given weights), sized from the cluster."""
    return PipelineConfig(extract=extract.default())


def reference() -> PipelineConfig:
    """The reference recipe in float32 everywhere (2D without bf16, 3D without TF32), as the released features."""
    return PipelineConfig(extract=extract.reference_precision())


def tiny_cpu() -> PipelineConfig:
    """Tiny twins of both models, small shards, 2 CPUs: for tests and demos on a laptop."""
    return PipelineConfig(
        extract=extract.tiny_cpu(),
        ray=RayConfig(num_cpus=2),
        shards=ShardConfig(max_videos=8, max_bytes=64 << 20),
    )


PRESETS = {"default": default, "reference": reference, "tiny_cpu": tiny_cpu}
