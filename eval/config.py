"""The evaluation jobs' typed configs and their named presets.

:class:`EvalConfig` (``mcn eval retrieval|localization``), :class:`SearchConfig` (``mcn search``) and
:class:`PrepareConfig` (the evaluation side of ``mcn eval prepare``). The benchmark protocol settings (audio
frames, gallery, denominator and median rules) are not here: they travel in each benchmark definition
(:mod:`mcn.eval.benchmarks`); the overrides below only replace them when given, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mcn.errors import MCNError
from mcn.eval.protocols import MIN_AUDIO_FRAMES

KINDS = ("retrieval", "localization")
LOGMEL_PADDINGS = ("zero_db", "floor")
ADAPTERS = ("youcook2", "msrvtt", "crosstask", "mining_youtube", "generic")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where the models run and how much goes through them at once."""

    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "cuda:1", ...
    # 64 clips of 5,120 log-mel frames are ~50 MB of audio input: small next to any GPU, quick on a CPU.
    batch_size: int = 64
    # 1,024 query rows × the gallery per similarity block: 14 MB for YouCook2's 3,350 clips.
    chunk_size: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1:
            raise MCNError(
                f"runtime.batch_size and runtime.chunk_size must be >= 1 (got {self.batch_size}, {self.chunk_size})"
            )
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise MCNError(f"runtime.device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def torch_device(self) -> torch.device:
        """The device to run on: ``auto`` is the first GPU when there is one, else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MCNError(f"--device {self.device}: no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(self.device)


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """Query words: the store's word table first, then a word2vec file for the words it never saw."""

    word_vectors: str | None = None  # None: the file the store manifest records, when it still exists
    # A query word outside the store's table with no word2vec file to look it up in is an error unless set.
    allow_missing_words: bool = False


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """How clip log-mels are padded: ``zero_db`` as the reference (0 dB is the loudest level of the
    recording's log-mel), or ``floor`` (the clip's own lowest level, i.e. silence)."""

    logmel_padding: str = "zero_db"

    def __post_init__(self) -> None:
        if self.logmel_padding not in LOGMEL_PADDINGS:
            raise MCNError(
                f"audio.logmel_padding must be one of {LOGMEL_PADDINGS}, got {self.logmel_padding!r}"
            )


@dataclass(frozen=True, kw_only=True)
class OverrideConfig:
    """Replace a definition's settings for this run (None: the definition's). The report notes each one."""

    audio_frames: int | None = None
    num_total: int | None = None  # retrieval: the annotated clip count of the `annotated` rules

    def __post_init__(self) -> None:
        if self.audio_frames is not None and self.audio_frames < MIN_AUDIO_FRAMES:
            raise MCNError(
                f"overrides.audio_frames must be >= {MIN_AUDIO_FRAMES} (the audio network downsamples 16x)"
            )
        if self.num_total is not None and self.num_total < 1:
            raise MCNError(f"overrides.num_total must be >= 1, got {self.num_total}")


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    thumbnails: bool = True  # decode one frame per shown clip from the source video the store records
    num_examples: int = 4  # sample queries shown
    top_k_shown: int = 5
    curve_max_k: int = 50

    def __post_init__(self) -> None:
        if self.num_examples < 0 or self.top_k_shown < 1 or self.curve_max_k < 1:
            raise MCNError("report.num_examples must be >= 0, report.top_k_shown and report.curve_max_k >= 1")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Several checkpoints × several benchmark definitions, scored on one store. Presets leave the paths empty."""

    kind: str = "retrieval"
    checkpoints: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    store: str = ""
    out: str = ""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    overrides: OverrideConfig = field(default_factory=OverrideConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MCNError(f"kind must be 'retrieval' or 'localization', got {self.kind!r}")

    def check_paths(self) -> None:
        """Before a run: everything to evaluate is given."""
        if not self.checkpoints or not self.benchmarks or not self.store or not self.out:
            raise MCNError(
                "give at least one --checkpoint and one --benchmark, the --store and the --out folder"
            )


def default() -> EvalConfig:
    """The reference recipe on the best device there is, with thumbnails in the report."""
    return EvalConfig()


def quick_cpu() -> EvalConfig:
    """On the CPU, small batches, no thumbnails or progress bar: tests, CI and laptops."""
    return EvalConfig(
        runtime=RuntimeConfig(device="cpu", batch_size=16, progress=False),
        report=ReportConfig(thumbnails=False, num_examples=2),
    )


PRESETS = {"default": default, "quick_cpu": quick_cpu}


# ---- search -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """The moments of a video that search ranks: sliding windows, plus each caption span."""

    window_s: float = 10.0
    hop_s: float = 5.0
    audio_frames: int = 1000  # 10 s of log-mel
    captions: bool = True

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.hop_s <= 0 or self.audio_frames < MIN_AUDIO_FRAMES:
            raise MCNError(
                f"windows.window_s and windows.hop_s must be > 0 and windows.audio_frames >= {MIN_AUDIO_FRAMES}"
            )


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """One text query against every moment of a store; the moment index is built once per checkpoint."""

    store: str = ""
    checkpoint: str = ""
    query: str = ""
    k: int = 10
    rebuild: bool = False
    # Where the index goes when the store cannot be written; None: search-index/ in the cache folder.
    index_dir: str | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise MCNError(f"-k must be >= 1, got {self.k}")
        if self.index_dir is not None and not self.index_dir.strip():
            raise MCNError("--index-dir must name a folder (leave it out for the default cache folder)")


def search_default() -> SearchConfig:
    """10 s windows every 5 s plus caption spans, on the best device there is."""
    return SearchConfig()


def search_quick_cpu() -> SearchConfig:
    """On the CPU with small batches and no progress bar."""
    return SearchConfig(runtime=RuntimeConfig(device="cpu", batch_size=16, progress=False))


SEARCH_PRESETS = {"default": search_default, "quick_cpu": search_quick_cpu}


# ---- prepare ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """Official annotations + a folder of videos -> a benchmark definition and an extraction manifest.

    ``annotations`` per adapter: youcook2 = (youcookii_annotations_trainval.json,); msrvtt = (the JSFusion test
    CSV,); crosstask = (tasks_primary.txt, the annotations folder); mining_youtube = (the folder of per-video
    segment files,); generic = (a clip list .csv, a localisation .json or a definition,).
    """

    benchmark: str
    annotations: tuple[str, ...]
    videos: str
    out: str  # the store; the definition and the manifest go to OUT/benchmarks/
    split: str = "validation"  # YouCook2 subset
    frame_rate: float | None = None  # Mining YouTube: times are frames at this rate (None: seconds)
    video_list: str | None = None  # CrossTask: only the (task, video) pairs of this list (videos_val.csv)
    audio_frames: int | None = None  # generic clip lists: required; others: replaces the benchmark's
    score_normalisation: str | None = None  # generic localisation JSON without one: required

    def __post_init__(self) -> None:
        if self.benchmark not in ADAPTERS:
            raise MCNError(f"unknown benchmark {self.benchmark!r}; use one of {', '.join(ADAPTERS)}")
        if len(self.annotations) != (2 if self.benchmark == "crosstask" else 1):
            raise MCNError(
                f"{self.benchmark} takes {2 if self.benchmark == 'crosstask' else 1} --annotations path(s), "
                f"got {len(self.annotations)}"
                + ("; give the video list with --video-list" if self.benchmark == "crosstask" else "")
            )
        if self.frame_rate is not None and self.frame_rate <= 0:
            raise MCNError("--frame-rate must be > 0")
        if self.video_list is not None and self.benchmark != "crosstask":
            raise MCNError("--video-list restricts CrossTask only")
        if self.audio_frames is not None and self.audio_frames < MIN_AUDIO_FRAMES:
            raise MCNError(f"--audio-frames must be >= {MIN_AUDIO_FRAMES}")

    def manifest_path(self, name: str) -> Path:
        return Path(self.out) / "benchmarks" / f"{name}-inputs.csv"
