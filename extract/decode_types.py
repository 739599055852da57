"""What every part of decoding shares: the config, the probe's result, frame windows, the error type, geometry.

The modules above this one: :mod:`.decode_probe` (metadata), :mod:`.decode_worker` (decord frames),
:mod:`.decode_child` (decoding in a killable child process), :mod:`.decode_ffmpeg` (ffmpeg frames),
:mod:`.decode_audio` (the audio track), and :mod:`.decode` on top, which picks a backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import imageio_ffmpeg
import numpy as np

from mcn.errors import MCNError

REASONS = (
    "not_found",
    "empty",
    "corrupt",
    "no_video_stream",
    "no_audio_stream",
    "unsupported_codec",
    "timeout",
)
BACKENDS = ("decord", "ffmpeg")
KERNELS = ("reference", "fast")
CLIP_FRAMES = 16  # frames per 3D clip: windows must hold whole clips
# Phrases of ffmpeg's error output that mean the input is damaged or not a media file.
CORRUPT_HINTS = (
    "Invalid data found",
    "moov atom not found",
    "could not find codec parameters",
    "EBML header",
)


class DecodeError(Exception):
    """A video or audio track that cannot be decoded; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        return DecodeError, (self.reason, self.detail)


@dataclass(frozen=True)
class VideoInfo:
    """What the probe learns about a file. ``container`` is the demuxer's name (e.g. "matroska,webm").

    ``duration`` is the video stream's (first frame to the end of the last), not the container's: a short video
    with a long audio track has the video's duration. ``width`` x ``height`` is the coded size of the stream;
    ``rotation`` is the counter-clockwise display rotation in degrees (0, 90, 180 or 270) from the stream's
    display matrix, which decoders apply to the frames. :attr:`display_size` is the size of the frames as shown.
    """

    path: str
    duration: float
    fps: float
    width: int
    height: int
    num_frames: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    container: str
    rotation: int = 0

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the upright frames: the coded size, swapped for a 90 or 270 degree rotation."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """How frames are sampled and how long decoding may stall.

    ``window_seconds`` bounds memory; it must hold a whole number of 16-frame 3D clips (a multiple of 2 s at
    24 fps) so clips line up across windows. ``timeout_s`` is the longest wait for the next window (a hung
    decoder makes no progress), not a limit on the whole video. ``decode_threads`` is the decoder's thread
    count (0 = the decoder's choice). ``backend`` is one of :data:`BACKENDS` (see :mod:`mcn.extract.decode`).
    ``kernel`` is how the 3D frames are resized: ``"reference"`` (each backend's documented recipe, the default) or
    ``"fast"`` (ffmpeg backend only: the centre square is cut first and scaled once with an area kernel, colour
    converted last; faster, with slightly different pixels: see :mod:`mcn.extract.decode_ffmpeg`).
    """

    size_2d: int = 224
    rate_2d: float = 1.0
    size_3d: int = 112
    rate_3d: float = 24.0
    window_seconds: float = 30.0
    timeout_s: float = 300.0
    ffmpeg: str | None = None
    decode_threads: int = 1
    backend: str = "decord"
    kernel: str = "reference"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise MCNError(f"decode backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.kernel not in KERNELS:
            raise MCNError(f"decode kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.kernel == "fast" and self.backend != "ffmpeg":
            raise MCNError(
                "the fast decode kernel is one of the ffmpeg backend's filter graphs: set backend='ffmpeg' "
                "or kernel='reference'"
            )
        if self.size_2d <= 0 or self.size_3d <= 0:
            raise MCNError(
                f"decode size_2d and size_3d must be positive, got {self.size_2d} and {self.size_3d}"
            )
        if self.rate_2d <= 0 or self.rate_3d <= 0:
            raise MCNError(
                f"decode rate_2d and rate_3d must be positive, got {self.rate_2d} and {self.rate_3d}"
            )
        frames_2d = self.window_seconds * self.rate_2d
        clips_3d = self.window_seconds * self.rate_3d / CLIP_FRAMES
        if self.window_seconds <= 0 or frames_2d != round(frames_2d) or clips_3d != round(clips_3d):
            raise MCNError(
                f"decode window_seconds={self.window_seconds} must hold whole 2D frames and whole 16-frame 3D "
                f"clips at rate_2d={self.rate_2d}, rate_3d={self.rate_3d}: use a multiple of 2 s (e.g. 30) "
                "at 1/24 fps"
            )
        if self.timeout_s <= 0:
            raise MCNError(f"decode timeout_s must be positive, got {self.timeout_s}")
        if self.decode_threads < 0:
            raise MCNError(
                f"decode_threads must be >= 0 (0 = the decoder's choice), got {self.decode_threads}"
            )

    @property
    def frames_per_window(self) -> tuple[int, int]:
        """(2D, 3D) frames in a whole window."""
        return round(self.window_seconds * self.rate_2d), round(self.window_seconds * self.rate_3d)


@dataclass
class FrameWindow:
    """Frames of the seconds [start_s, start_s + window_seconds): 2D at rate_2d (shorter side size_2d, no crop),
    3D at rate_3d (size_3d x size_3d centre crop), both uint8 RGB. The last window is not padded."""

    start_s: float
    frames_2d_THWC: np.ndarray
    frames_3d_THWC: np.ndarray


@dataclass
class DecoderUsage:
    """CPU seconds (user + system) used by the processes a decode started: the decord child process or the ffmpeg
    process, not the calling process. Filled in when the last window has been read."""

    cpu_s: float = 0.0


def output_size_2d(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``size`` and the other side scaled and truncated."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def ffmpeg_binary(ffmpeg: str | None = None) -> str:
    """The ffmpeg executable to run: the one given, else the binary that imageio-ffmpeg ships."""
    return ffmpeg or imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_missing(binary: str) -> MCNError:
    """The error for an ffmpeg executable that does not exist."""
    return MCNError(f"ffmpeg binary not found: {binary}; point the ffmpeg option at an ffmpeg executable")


def check_file(path: str | os.PathLike) -> str:
    """Raise ``not_found`` / ``empty`` for a missing or zero-byte file; return the path as a string."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecodeError("not_found", path)
    if os.path.getsize(path) == 0:
        raise DecodeError("empty", f"{path} has zero bytes")
    return path
