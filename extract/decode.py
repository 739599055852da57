"""Decoding one video file: metadata, frame windows for the 2D/3D extractors, and the audio track.

Every failure caused by the input file is a :class:`DecodeError` with one of :data:`REASONS`.

Metadata (:func:`probe`) comes from the stderr of ``ffmpeg -i FILE -map 0:v:0 -c copy -f null -``: the
header gives duration, frame rate, size, codecs, streams and the display rotation; the copy pass (demux only,
no decoding) gives the exact number of video packets. No ffprobe is needed. A video codec that ffmpeg has no
decoder for (``ffmpeg -codecs``) is ``unsupported_codec``.

Frames (:func:`iter_frame_windows`) come from one decode pass with one of two backends
(``DecodeConfig.backend``):

- ``"decord"`` (default): decord decodes at the 2D size and frames are picked by timestamp; the 3D frames are
  made from the 2D frames (see :mod:`mcn.extract.decode_worker`). By default the decord work runs in a child
  process, so a decoder that hangs can be killed; ``in_process=True`` skips that.
- ``"ffmpeg"``: one ffmpeg process with a ``split`` filter graph, the reference's ``fps`` / ``scale`` /
  ``crop`` filters on each branch (see :mod:`mcn.extract.decode_ffmpeg`). ffmpeg is itself a child process
  that is killed on timeout, so ``in_process`` does not apply.

Both backends give upright frames for videos with a rotation display matrix (phone videos), as ffmpeg's
autorotation does in the reference: sizes are computed from :attr:`VideoInfo.display_size`.

Audio (:func:`read_audio`) is decoded by ffmpeg (via ffmpeg-python) to 16 kHz mono float32 through a pipe.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ffmpeg as ffmpeg_python
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
    """What :func:`probe` learns about a file. ``container`` is ffmpeg's demuxer name (e.g. "matroska,webm").

    ``width`` x ``height`` is the coded size of the stream; ``rotation`` is the counter-clockwise display
    rotation in degrees (0, 90, 180 or 270) from the stream's display matrix, which decoders apply to the
    frames. :attr:`display_size` is the size of the frames as they are shown.
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


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are sampled and how long decoding may stall.

    ``window_seconds`` bounds memory; it must hold a whole number of 16-frame 3D clips (a multiple of 2 s at
    24 fps) so clips line up across windows. ``timeout_s`` is the longest wait for the next window (a hung
    decoder makes no progress), not a limit on the whole video. ``decode_threads`` is the decoder's thread
    count (0 = the decoder's choice). ``backend`` is one of :data:`BACKENDS` (see the module docstring).
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

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.size_2d <= 0 or self.size_3d <= 0:
            raise ValueError(f"size_2d and size_3d must be positive, got {self.size_2d} and {self.size_3d}")
        if self.rate_2d <= 0 or self.rate_3d <= 0:
            raise ValueError(f"rate_2d and rate_3d must be positive, got {self.rate_2d} and {self.rate_3d}")
        frames_2d = self.window_seconds * self.rate_2d
        clips_3d = self.window_seconds * self.rate_3d / 16
        if self.window_seconds <= 0 or frames_2d != round(frames_2d) or clips_3d != round(clips_3d):
            raise ValueError(
                f"window_seconds={self.window_seconds} must hold whole 2D frames and whole 16-frame 3D clips "
                f"at rate_2d={self.rate_2d}, rate_3d={self.rate_3d}: use a multiple of 2 s (e.g. 30) at 1/24 fps"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.decode_threads < 0:
            raise ValueError(
                f"decode_threads must be >= 0 (0 = the decoder's choice), got {self.decode_threads}"
            )


@dataclass
class FrameWindow:
    """Frames of the seconds [start_s, start_s + window_seconds): 2D at rate_2d (shorter side size_2d, no crop),
    3D at rate_3d (size_3d x size_3d centre crop), both uint8 RGB. The last window is not padded."""

    start_s: float
    frames_2d_THWC: np.ndarray
    frames_3d_THWC: np.ndarray


def ffmpeg_binary(ffmpeg: str | None = None) -> str:
    """The ffmpeg executable to run: the one given, else the binary that imageio-ffmpeg ships."""
    return ffmpeg or imageio_ffmpeg.get_ffmpeg_exe()


def output_size_2d(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``size`` and the other side scaled and truncated."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def check_file(path: str | os.PathLike) -> str:
    """Raise ``not_found`` / ``empty`` for a missing or zero-byte file; return the path as a string."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecodeError("not_found", path)
    if os.path.getsize(path) == 0:
        raise DecodeError("empty", f"{path} has zero bytes")
    return path


def _run_ffmpeg(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise DecodeError("timeout", f"ffmpeg ran longer than {timeout_s:g} s") from error
    except FileNotFoundError as error:
        raise MCNError(
            f"ffmpeg binary not found: {cmd[0]}; point the ffmpeg option at an ffmpeg executable"
        ) from error


_STREAM = re.compile(r"Stream #\d+:\d+\S*: (Video|Audio): (.*)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(?:^|[ ,])(\d{1,5})x(\d{1,5})(?=[ ,\]]|$)")
_RATE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_ROTATION = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")
_CORRUPT_HINTS = (
    "Invalid data found",
    "moov atom not found",
    "could not find codec parameters",
    "EBML header",
)


def _hms(match: re.Match) -> float:
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])


def _first_rate(text: str) -> float:
    rates = {kind: float(value) * (1000 if k else 1) for value, k, kind in _RATE.findall(text)}
    return rates.get("fps") or rates.get("tbr") or 0.0


@functools.lru_cache(maxsize=8)
def decodable_codecs(ffmpeg: str) -> frozenset[str] | None:
    """Names of the codecs this ffmpeg binary can decode (``ffmpeg -codecs``); None when it cannot tell."""
    try:
        result = subprocess.run(
            [ffmpeg, "-hide_banner", "-codecs"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    _, _, table = result.stdout.decode("utf-8", errors="replace").partition("-------")
    rows = (line.split() for line in table.splitlines())
    names = frozenset(row[1] for row in rows if len(row) >= 2 and len(row[0]) == 6 and row[0][0] == "D")
    return names if result.returncode == 0 and names else None


def _rotation(header: str, video_line: str) -> int:
    """The display rotation of the stream whose header line is ``video_line``, as 0, 90, 180 or 270."""
    section = header[header.index(video_line) :]
    following = section.find("Stream #", len(video_line))
    match = _ROTATION.search(section if following < 0 else section[:following])
    return round(float(match[1]) / 90) % 4 * 90 if match else 0


def probe(path: str | os.PathLike, ffmpeg: str | None = None, timeout_s: float = 60.0) -> VideoInfo:
    """Read a video's metadata from ffmpeg's stderr (no ffprobe). Raises :class:`DecodeError`."""
    path = check_file(path)
    cmd = [
        ffmpeg_binary(ffmpeg),
        "-hide_banner",
        "-nostdin",
        "-i",
        path,
        "-map",
        "0:v:0?",
        "-c",
        "copy",
        "-f",
        "null",
        "-",
    ]
    stderr = _run_ffmpeg(cmd, timeout_s).stderr.decode("utf-8", errors="replace")
    header, _, progress = stderr.partition("Output #0")
    if "Input #0" not in header:
        hint = next((h for h in _CORRUPT_HINTS if h in header), None)
        raise DecodeError("corrupt", f"{path}: {hint or header.strip().splitlines()[-1:]}")
    streams = [match for match in _STREAM.finditer(header) if "(attached pic)" not in match[2]]
    videos = [match for match in streams if match[1] == "Video"]
    audios = [match[2] for match in streams if match[1] == "Audio"]
    if not videos:
        raise DecodeError("no_video_stream", f"{path} has no video stream")
    video = videos[0][2]
    video_codec = video.split()[0].rstrip(",")
    if video_codec == "none":
        raise DecodeError("unsupported_codec", f"{path}: ffmpeg cannot identify the video codec")
    decodable = decodable_codecs(cmd[0])
    if decodable is not None and video_codec not in decodable:
        raise DecodeError("unsupported_codec", f"{path}: ffmpeg has no decoder for {video_codec}")
    size = _SIZE.search(video)
    if size is None:
        raise DecodeError("corrupt", f"{path}: no frame size in the video stream header")
    frames = _FRAMES.findall(progress)
    num_frames = int(frames[-1]) if frames else 0
    if num_frames == 0:
        raise DecodeError("empty", f"{path} has no video frames")
    duration = _DURATION.search(header)
    times = list(_TIME.finditer(progress))
    if duration is not None:
        seconds = _hms(duration)
    elif times:
        seconds = _hms(times[-1])
    else:
        seconds = 0.0
    container = re.search(r"Input #0, (\S+), from", header)
    return VideoInfo(
        path=path,
        duration=seconds,
        fps=_first_rate(video),
        width=int(size[1]),
        height=int(size[2]),
        num_frames=num_frames,
        has_audio=bool(audios),
        video_codec=video_codec,
        audio_codec=audios[0].split()[0].rstrip(",") if audios else None,
        container=container[1].rstrip(",") if container else "",
        rotation=_rotation(header, videos[0][0]),
    )


def read_audio(
    path: str | os.PathLike, sample_rate: int = 16000, ffmpeg: str | None = None, timeout_s: float = 300.0
) -> np.ndarray:
    """The first audio track as mono float32 at ``sample_rate``, decoded by ffmpeg through a pipe.

    Raises :class:`DecodeError` (``no_audio_stream`` when the file has none, ``timeout`` after ``timeout_s``).
    """
    path = check_file(path)
    stream = ffmpeg_python.input(path).output(
        "pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate
    )
    cmd = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(
        cmd=ffmpeg_binary(ffmpeg)
    )
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as error:
        raise MCNError(
            f"ffmpeg binary not found: {cmd[0]}; point the ffmpeg option at an ffmpeg executable"
        ) from error
    stderr_chunks: list[bytes] = []
    drain = threading.Thread(
        target=lambda: stderr_chunks.extend(iter(lambda: proc.stderr.read(65536), b"")), daemon=True
    )
    drain.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        chunks = list(iter(lambda: proc.stdout.read(1 << 20), b""))
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join()
        proc.stdout.close()
        proc.stderr.close()
    if timed_out.is_set():
        raise DecodeError("timeout", f"audio decoding ran longer than {timeout_s:g} s")
    stderr = b"".join(stderr_chunks).decode("utf-8", errors="replace")
    if returncode != 0:
        if "matches no streams" in stderr:
            raise DecodeError("no_audio_stream", f"{path} has no audio stream")
        hint = next((h for h in _CORRUPT_HINTS if h in stderr), stderr.strip()[-200:])
        raise DecodeError("corrupt", f"{path}: {hint}")
    data = b"".join(chunks)
    return np.frombuffer(data[: len(data) - len(data) % 4], dtype="<f4").astype(np.float32)


def iter_frame_windows(
    path: str | os.PathLike, info: VideoInfo, config: DecodeConfig, in_process: bool = False
) -> Iterator[FrameWindow]:
    """Decode the video once and yield :class:`FrameWindow` s of ``config.window_seconds`` each, in order.

    Memory is bounded by a few windows. With the decord backend, unless ``in_process``, decord runs in a child
    process that is killed when no window arrives within ``config.timeout_s`` (``DecodeError("timeout")``);
    the ffmpeg backend's ffmpeg process is killed the same way (``in_process`` does not apply).
    """
    from mcn.extract import decode_worker

    path = check_file(path)
    if config.backend == "ffmpeg":
        from mcn.extract import decode_ffmpeg

        return decode_ffmpeg.iter_windows(path, info, config)
    if in_process:
        return decode_worker.iter_windows(path, info, config)
    return iter_windows_in_child(path, info, config, decode_worker.iter_windows)


def iter_windows_in_child(
    path: str, info: VideoInfo, config: DecodeConfig, source: Callable[..., Iterator[FrameWindow]]
) -> Iterator[FrameWindow]:
    """Run ``source(path, info, config)`` in a child process and stream its windows back over a pipe.

    ``source`` must be picklable by reference (a module-level function); it is a parameter so that tests can
    substitute a decoder that hangs.
    """
    from mcn.extract import decode_worker

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mcn.extract.decode_worker", "decord"])  # imported once, not per video
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=decode_worker.run_child, args=(sender, path, info, config, source), daemon=True
    )
    child.start()
    sender.close()

    def receive(timeout_s: float, into: bytearray | None = None):
        if not receiver.poll(timeout_s):
            raise DecodeError("timeout", f"no frames from the decoder within {timeout_s:g} s: {path}")
        try:
            return receiver.recv_bytes_into(into) if into is not None else receiver.recv()
        except EOFError:
            child.join(5.0)
            raise DecodeError("corrupt", f"the decoder exited with code {child.exitcode} on {path}") from None

    try:
        while True:
            message = receive(config.timeout_s)
            if message[0] == "done":
                return
            if message[0] == "error":
                raise DecodeError(message[1], message[2])
            _, start_s, shape_2d, shape_3d = message
            arrays = []
            for shape in (shape_2d, shape_3d):
                buffer = bytearray(int(np.prod(shape)))
                receive(config.timeout_s, into=buffer)
                arrays.append(np.frombuffer(buffer, dtype=np.uint8).reshape(shape))
            yield FrameWindow(start_s=start_s, frames_2d_THWC=arrays[0], frames_3d_THWC=arrays[1])
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
