"""Per-video feature extraction: one video file (+ optional caption file) -> its 2D, 3D, audio and text features.

``extract_video(path, config)`` runs the one per-video stream (:mod:`mcn.extract.stream`): probe, captions,
log-mel, then the video decoded once in bounded windows whose frames go to the 2D and 3D networks in full
batches filled across windows (:mod:`mcn.extract.batching`). The Ray extraction job runs the same stream and
the same batching across videos. The models load once per config (:class:`VideoExtractor`). torch is imported
only when extraction starts, so ``import mcn.extract.text`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcn.configs import config_to_dict
from mcn.errors import MCNError
from mcn.extract.asr import AsrConfig
from mcn.extract.batching import MODEL_KINDS, BatchFiller, batch_group, num_rows
from mcn.extract.constants import FEATURE_DIM
from mcn.extract.decode import DecodeConfig, DecodeError
from mcn.extract.stream import VideoAssembly, VideoFeatures, VideoHeader, VideoStream

__all__ = [
    "AsrConfig",
    "DecodeError",
    "ExtractConfig",
    "VideoExtractor",
    "VideoFeatures",
    "default",
    "extract_video",
    "load_model",
    "reference_precision",
    "tiny_cpu",
]


@dataclass(frozen=True, kw_only=True)
class ModelsConfig:
    """Registered model names (``mcn.extract.visual.MODELS``) and their weights files."""

    model_2d: str = "resnet152"
    model_3d: str = "resnext101"
    weights_2d: str | None = (
        None  # torchvision ResNet-152 state dict (resnet152-*.pth); None = random (warns)
    )
    weights_3d: str | None = None  # resnext-101-kinetics.pth; None = random (warns)
    download_2d: bool = False  # let torchvision download its ImageNet ResNet-152 weights

    def __post_init__(self) -> None:
        if self.download_2d and self.weights_2d:
            raise MCNError("set either models.weights_2d or models.download_2d, not both")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where and how the networks run. Precisions apply on a GPU only; the CPU always runs float32."""

    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "cuda:1", ...
    batch_2d: int = 128  # frames per forward: 95% of the H200 model-only bound at 224x398 in bf16
    batch_3d: int = 64  # 16-frame clips per forward: ~2,000 clips/s model-only on an H200 in TF32
    precision_2d: str = "bf16"  # bf16 + channels_last: 2.3x fp32 for ResNet-152 on an H200
    precision_3d: str = "tf32"  # half precision is slower for grouped 3D convolutions

    def __post_init__(self) -> None:
        if self.batch_2d < 1 or self.batch_3d < 1:
            raise MCNError(
                f"runtime batch sizes must be >= 1, got batch_2d={self.batch_2d}, batch_3d={self.batch_3d}"
            )
        allowed = ("fp32", "tf32", "bf16", "fp16")
        for name in ("precision_2d", "precision_3d"):
            if getattr(self, name) not in allowed:
                raise MCNError(f"runtime.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise MCNError(f"runtime.device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """Word vectors for caption token ids (None: captions are kept as text, without ids)."""

    word_vectors: str | None = None  # word2vec .bin (GoogleNews) or text file
    binary: bool | None = None  # None: from the extension / file header


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    text: TextConfig = field(default_factory=TextConfig)


def default() -> ExtractConfig:
    """The full-size recipe (ResNet-152 + ResNeXt-101 on a GPU when present). Give weights paths."""
    return ExtractConfig()


def reference_precision() -> ExtractConfig:
    """The full-size recipe in float32 everywhere (no bf16, no TF32), as the released features were computed.

    Slower on a GPU than :func:`default` (whose bf16 2D pass is 2.3x fp32 on an H200); on the CPU both are fp32.
    """
    return ExtractConfig(runtime=RuntimeConfig(precision_2d="fp32", precision_3d="fp32"))


def tiny_cpu() -> ExtractConfig:
    """Tiny twin networks on the CPU, for tests and demos: same decode, shapes and code paths."""
    return ExtractConfig(
        models=ModelsConfig(model_2d="resnet152-tiny", model_3d="resnext101-tiny"),
        runtime=RuntimeConfig(device="cpu", batch_2d=16, batch_3d=8),
    )


def load_model(kind: str, config: ExtractConfig) -> Any:
    """The 2D or 3D extractor (``kind`` "2d" / "3d") of a config, its network loaded (imports torch)."""
    from mcn.extract.extractors import Clip3DExtractor, Frame2DExtractor

    models, runtime = config.models, config.runtime
    if kind == "2d":
        return Frame2DExtractor(
            models.model_2d,
            models.weights_2d,
            models.download_2d,
            runtime.device,
            runtime.batch_2d,
            runtime.precision_2d,
        )
    return Clip3DExtractor(
        models.model_3d, models.weights_3d, runtime.device, runtime.batch_3d, runtime.precision_3d
    )


class VideoExtractor:
    """Loads the networks (and word vectors, and the speech recogniser when ``asr.enabled``) of a config once;
    ``__call__(path, caption_path)`` per video.

    The frames of a video's windows are gathered into batches of ``runtime.batch_2d`` frames and
    ``runtime.batch_3d`` clips (a window may be split between two batches); at most one batch of frames per
    network is held besides the current window.
    """

    def __init__(self, config: ExtractConfig, asr: AsrConfig | None = None):
        self.config = config
        self.models = {kind: load_model(kind, config) for kind in MODEL_KINDS}
        self.asr = None
        if asr is not None and asr.enabled:
            from mcn.extract.asr import load_asr

            self.asr = load_asr(asr, "cpu")  # as in the extraction job
        self.tokenizer = None
        if config.text.word_vectors:
            from mcn.extract.extractors import CaptionTokenizer

            self.tokenizer = CaptionTokenizer(config.text.word_vectors, config.text.binary)

    def __call__(self, path: str | Path, caption_path: str | Path | None = None) -> VideoFeatures:
        assembly = VideoAssembly()
        fillers = {kind: BatchFiller(model.batch_size) for kind, model in self.models.items()}
        for part in VideoStream(path, caption_path, self.config.decode, transcribe=self.asr is not None):
            if isinstance(part, VideoHeader):
                assembly.add_header(part)
                if part.needs_asr:
                    assembly.set_captions(self.asr(part.waveform_16k))
                continue
            window = assembly.add_window()
            for kind, filler in fillers.items():
                frames = part.frames(kind)
                rows = num_rows(kind, len(frames))
                if rows == 0:
                    assembly.set_features(kind, window, np.zeros((0, FEATURE_DIM), np.float16))
                else:
                    filler.add(window, frames, rows, batch_group(kind, frames))
                while (pieces := filler.full_batch()) is not None:
                    self._run(kind, filler, pieces, assembly)
        assembly.stream_done = True
        for kind, filler in fillers.items():
            while (pieces := filler.partial_batch()) is not None:
                self._run(kind, filler, pieces, assembly)
        return assembly.features(self.tokenizer)

    def _run(self, kind: str, filler: BatchFiller, pieces: list, assembly: VideoAssembly) -> None:
        frames, bounds = [piece.payload for piece in pieces], [(piece.start, piece.stop) for piece in pieces]
        for window, feats in filler.deliver(pieces, self.models[kind].run_batch(frames, bounds)):
            assembly.set_features(kind, window, feats)


_cached: tuple[str, VideoExtractor] | None = None


def extract_video(
    path: str | Path,
    config: ExtractConfig,
    caption_path: str | Path | None = None,
    asr: AsrConfig | None = None,
) -> VideoFeatures:
    """Features of one video file. The networks of the last config used stay loaded between calls.

    With ``asr.enabled``, a video with audio and no caption file gets its captions from speech recognition
    (``caption_source == "asr"``). ``path`` and ``caption_path`` may be URLs (``s3://…``, see :mod:`mcn.storage`):
    the video is fetched into a temporary file, removed afterwards. Raises ``DecodeError`` for an unreadable
    video, ``CaptionError`` for a broken caption file and ``mcn.storage.FetchError`` for a video URL that
    cannot be fetched.
    """
    global _cached
    key = repr((config_to_dict(config), config_to_dict(asr) if asr is not None and asr.enabled else None))
    if _cached is None or _cached[0] != key:
        _cached = None  # free the previous networks before loading new ones
        _cached = (key, VideoExtractor(config, asr))
    return _cached[1](path, caption_path)
