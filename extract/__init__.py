"""Per-video feature extraction: one video file (+ optional caption file) -> its 2D, 3D, audio and text features.

``extract_video(path, config)`` decodes the video once in bounded windows, runs the 2D and 3D networks on
batches gathered across windows, computes the log-mel of the audio track and reads the captions. The models
load once per config (:class:`VideoExtractor`). torch is imported only when extraction starts, so
``import mcn.extract.text`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcn.configs import config_to_dict
from mcn.extract.decode import DecodeConfig, DecodeError, VideoInfo, iter_frame_windows, probe, read_audio

__all__ = [
    "DecodeError",
    "ExtractConfig",
    "VideoExtractor",
    "VideoFeatures",
    "default",
    "extract_video",
    "tiny_cpu",
]

AUDIO_SAMPLE_RATE = 16000
CLIP_FRAMES = 16


@dataclass
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
            raise ValueError("set either models.weights_2d or models.download_2d, not both")


@dataclass
class RuntimeConfig:
    """Where and how the networks run. Precisions apply on a GPU only; the CPU always runs float32."""

    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "cuda:1", ...
    batch_2d: int = 128  # frames per forward: 95% of the H200 model-only bound at 224x398 in bf16
    batch_3d: int = 64  # 16-frame clips per forward: ~2,000 clips/s model-only on an H200 in TF32
    precision_2d: str = "bf16"  # bf16 + channels_last: 2.3x fp32 for ResNet-152 on an H200
    precision_3d: str = "tf32"  # half precision is slower for grouped 3D convolutions

    def __post_init__(self) -> None:
        if self.batch_2d < 1 or self.batch_3d < 1:
            raise ValueError(
                f"runtime batch sizes must be >= 1, got batch_2d={self.batch_2d}, batch_3d={self.batch_3d}"
            )
        allowed = ("fp32", "tf32", "bf16", "fp16")
        for name in ("precision_2d", "precision_3d"):
            if getattr(self, name) not in allowed:
                raise ValueError(f"runtime.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"runtime.device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass
class TextConfig:
    """Word vectors for caption token ids (None: captions are kept as text, without ids)."""

    word_vectors: str | None = None  # word2vec .bin (GoogleNews) or text file
    binary: bool | None = None  # None: from the extension / file header


@dataclass
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    text: TextConfig = field(default_factory=TextConfig)


def default() -> ExtractConfig:
    """The full-size recipe (ResNet-152 + ResNeXt-101 on a GPU when present). Give weights paths."""
    return ExtractConfig()


def tiny_cpu() -> ExtractConfig:
    """Tiny twin networks on the CPU, for tests and demos: same decode, shapes and code paths."""
    return ExtractConfig(
        models=ModelsConfig(model_2d="resnet152-tiny", model_3d="resnext101-tiny"),
        runtime=RuntimeConfig(device="cpu", batch_2d=16, batch_3d=8),
    )


@dataclass
class VideoFeatures:
    """Everything extracted from one video. Feature arrays are float16."""

    info: VideoInfo
    feat_2d: np.ndarray  # (T2, 2048), 1 per second, L2-normalised rows
    feat_3d: np.ndarray  # (T3, 2048), one per 16 frames at 24 fps, L2-normalised rows
    logmel: np.ndarray | None  # (40, Ta), 100 per second; None = the video has no audio stream
    captions: list[tuple[float, float, str]]
    caption_source: str  # "vtt" | "srt" | "csv" | "json" | "asr" | "none"
    caption_token_ids: list[np.ndarray] | None = (
        None  # int32 ids per caption when config.text.word_vectors is set
    )


class VideoExtractor:
    """Loads the networks (and word vectors) of a config once; ``__call__(path, caption_path)`` per video."""

    def __init__(self, config: ExtractConfig):
        from mcn.extract.extractors import (
            CaptionTokenizer,
            Clip3DExtractor,
            Frame2DExtractor,
            LogMelExtractor,
        )

        self.config = config
        models, runtime = config.models, config.runtime
        self.frame_2d = Frame2DExtractor(
            models.model_2d,
            models.weights_2d,
            models.download_2d,
            runtime.device,
            runtime.batch_2d,
            runtime.precision_2d,
        )
        self.clip_3d = Clip3DExtractor(
            models.model_3d, models.weights_3d, runtime.device, runtime.batch_3d, runtime.precision_3d
        )
        self.log_mel = LogMelExtractor()
        self.tokenizer = (
            CaptionTokenizer(config.text.word_vectors, config.text.binary)
            if config.text.word_vectors
            else None
        )

    def __call__(self, path: str | Path, caption_path: str | Path | None = None) -> VideoFeatures:
        from mcn.extract.text import caption_format, read_captions

        # Captions first: a broken caption file fails fast, before the expensive decode.
        captions = read_captions(caption_path) if caption_path is not None else []
        caption_source = caption_format(caption_path) if caption_path is not None else "none"
        decode = self.config.decode
        info = probe(path, timeout_s=decode.timeout_s)
        feat_2d, feat_3d = self._visual_features(path, info)
        logmel = None
        if info.has_audio:
            waveform = read_audio(path, AUDIO_SAMPLE_RATE, ffmpeg=decode.ffmpeg, timeout_s=decode.timeout_s)
            logmel = self.log_mel([waveform]).only()
        token_ids = self.tokenizer([captions]).only() if self.tokenizer is not None else None
        return VideoFeatures(info, feat_2d, feat_3d, logmel, captions, caption_source, token_ids)

    def _visual_features(self, path: str | Path, info: VideoInfo) -> tuple[np.ndarray, np.ndarray]:
        """Run both networks over the decode windows, gathering frames into full batches.

        3D frames that do not fill a 16-frame clip carry over to the next window, so only the video's end is
        padded. At most one batch of frames per stream is held besides the current window.
        """
        runtime = self.config.runtime
        feats_2d: list[np.ndarray] = []
        feats_3d: list[np.ndarray] = []
        pending_2d: list[np.ndarray] = []
        pending_3d: list[np.ndarray] = []
        carry_3d: np.ndarray | None = None
        for window in iter_frame_windows(path, info, self.config.decode):
            pending_2d.append(window.frames_2d_THWC)
            frames_3d = (
                window.frames_3d_THWC
                if carry_3d is None
                else np.concatenate([carry_3d, window.frames_3d_THWC])
            )
            num_whole = len(frames_3d) - len(frames_3d) % CLIP_FRAMES
            pending_3d.append(frames_3d[:num_whole])
            carry_3d = frames_3d[num_whole:]
            if sum(map(len, pending_2d)) >= runtime.batch_2d:
                feats_2d.append(self._flush(self.frame_2d, pending_2d))
            if sum(map(len, pending_3d)) >= runtime.batch_3d * CLIP_FRAMES:
                feats_3d.append(self._flush(self.clip_3d, pending_3d))
        if carry_3d is not None:
            pending_3d.append(carry_3d)
        feats_2d.append(self._flush(self.frame_2d, pending_2d))
        feats_3d.append(self._flush(self.clip_3d, pending_3d))
        return np.concatenate(feats_2d), np.concatenate(feats_3d)

    @staticmethod
    def _flush(extractor: Any, pending: list[np.ndarray]) -> np.ndarray:
        frames = [f for f in pending if len(f)]
        pending.clear()
        if not frames:
            return np.zeros((0, 2048), np.float16)
        return extractor([np.concatenate(frames)]).only()


_cached: tuple[str, VideoExtractor] | None = None


def extract_video(
    path: str | Path, config: ExtractConfig, caption_path: str | Path | None = None
) -> VideoFeatures:
    """Features of one video file. The networks of the last config used stay loaded between calls.

    Raises ``DecodeError`` for an unreadable video and ``CaptionError`` for a broken caption file.
    """
    global _cached
    key = repr(config_to_dict(config))
    if _cached is None or _cached[0] != key:
        _cached = None  # free the previous networks before loading new ones
        _cached = (key, VideoExtractor(config))
    return _cached[1](path, caption_path)
