"""The ffmpeg frame backend: one ffmpeg process decodes the video once; a ``split`` graph makes both streams.

The graph is the reference's two pipelines side by side on one decoded stream::

    [0:v:0]split=2[a][b];
    [a]fps=RATE_2D,scale=W2:H2[o1];                           2D: shorter side SIZE_2D, no crop
    [b]fps=RATE_3D,scale=W3:H3,crop=SIZE_3D:SIZE_3D:X:Y[o2]   3D: shorter side SIZE_3D, centre crop

with the sizes and crop offsets computed as the reference computes them (other side ``int(side * size /
shorter)``, offsets ``int((side - size) / 2)``) from the upright frame size (ffmpeg autorotates). Frame picking
is therefore the ``fps`` filter's and resizing is ffmpeg's default ``scale`` (bicubic), filter for filter as in
the reference; only the number of decode passes differs. Explicit output sizes keep every frame the same size even
if the stream's resolution changes midway.

``DecodeConfig.kernel = "fast"`` changes the 3D branch only, to ``crop=S:S:X0:Y0,scale=SIZE_3D:SIZE_3D:flags=area,
format=yuv420p``: the centre square of the full frame (S = the shorter side) is cut first, so the scaler reads
and writes fewer pixels, scales it once with an area (box) kernel, and the colour conversion runs last, on the
small frames. The crop covers the same region up to a fraction of a pixel; pixels differ from the reference's
(docs/extraction.md gives the measured differences).

A stream that the ``fps`` filter leaves empty (2D frames of a video shorter than 0.5 / RATE_2D, where ffmpeg
also reports an output that "received no packets") gets the video's last frame, from a second, short ffmpeg run
without the ``fps`` filter, so every video of at least one frame has at least one frame per stream, as the decord
backend does.

The two outputs are raw RGB on two pipes (``pipe:N`` with ``pass_fds``): packed ``rgb24``, or planar ``gbrp``
where the scaled width is odd (the same frames for about half the scaler's colour-conversion cost, see
:func:`output_formats`), interleaved by the reader. One reader thread per pipe fills whole
windows straight into numpy arrays (``os.readv``, no extra copies) and hands them over through a one-slot queue,
so memory is bounded by a few windows whatever the video length; a third thread keeps the tail of stderr. Both
pipes must be drained at once: ffmpeg stops when either is full. ffmpeg is killed when no window arrives within
``config.timeout_s`` (``DecodeError("timeout")``), and when the consumer stops early.
"""

from __future__ import annotations

import os
import queue
import re
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import numba
import numpy as np

from mcn.extract.decode_types import (
    CORRUPT_HINTS,
    DecodeConfig,
    DecodeError,
    DecoderUsage,
    FrameWindow,
    VideoInfo,
    ffmpeg_binary,
    ffmpeg_missing,
    output_size_2d,
)

PIPE_BYTES = 1 << 20  # pipe capacity asked for (Linux): fewer wake-ups than the default 64 KB
STDERR_TAIL_BYTES = 64 * 1024
POLL_S = 0.1  # how often a blocked reader thread checks whether it should stop
REAP_POLL_S = 0.002  # how often the end of ffmpeg is checked once its outputs are closed
_NO_DECODER = re.compile(r"no decoder found for|Decoder \(codec \S+\) not found|Unknown decoder")
_NO_STREAM = ("matches no streams", "does not contain any stream")
_NO_PACKETS = "received no packets"  # ffmpeg's complaint about an output the fps filter left empty


def _rate(rate: float) -> str:
    return str(Fraction(rate).limit_denominator(1_000_000))


def resize_chains(info: VideoInfo, config: DecodeConfig) -> tuple[str, str]:
    """The filters after frame picking: (2D chain, 3D chain)."""
    width, height = info.display_size
    width_2d, height_2d = output_size_2d(width, height, config.size_2d)
    size = config.size_3d
    if config.kernel == "fast":
        side = min(width, height)
        chain_3d = (
            f"crop={side}:{side}:{(width - side) // 2}:{(height - side) // 2},"
            f"scale={size}:{size}:flags=area,format=yuv420p"
        )
    else:
        width_3d, height_3d = output_size_2d(width, height, size)
        left, top = (width_3d - size) // 2, (height_3d - size) // 2
        chain_3d = f"scale={width_3d}:{height_3d},crop={size}:{size}:{left}:{top}"
    return f"scale={width_2d}:{height_2d}", chain_3d


def output_formats(info: VideoInfo, config: DecodeConfig) -> tuple[str, str]:
    """The pixel format ffmpeg writes for each output, (2D, 3D): ``rgb24``, or planar ``gbrp`` where that is
    the same picture at a lower cost.

    A scaler that writes RGB at an odd width interpolates the chroma at full width (swscale forces it for odd
    output widths), and then packed ``rgb24`` and planar ``gbrp`` are the same arithmetic with the channels
    stored apart; swscale's planar writer is vectorised, its packed one is not, so the planar output costs about
    half as much. The reader interleaves the planes (:func:`_interleave`). Even widths keep ``rgb24``: there the
    scaler shares one chroma sample between two pixels, which ``gbrp`` never does. The fast kernel converts its
    colour on the small frames and keeps ``rgb24``.
    """
    width, height = info.display_size
    width_2d, _ = output_size_2d(width, height, config.size_2d)
    width_3d, _ = output_size_2d(width, height, config.size_3d)
    odd_3d = config.kernel == "reference" and width_3d % 2 == 1
    return ("gbrp" if width_2d % 2 == 1 else "rgb24"), ("gbrp" if odd_3d else "rgb24")


def filter_graph(info: VideoInfo, config: DecodeConfig) -> tuple[str, tuple[int, int]]:
    """The ``-filter_complex`` graph (outputs ``[o1]`` 2D, ``[o2]`` 3D) and the 2D frame (width, height)."""
    chain_2d, chain_3d = resize_chains(info, config)
    graph = (
        "[0:v:0]split=2[a][b];"
        f"[a]fps={_rate(config.rate_2d)},{chain_2d}[o1];"
        f"[b]fps={_rate(config.rate_3d)},{chain_3d}[o2]"
    )
    return graph, output_size_2d(*info.display_size, config.size_2d)


def classify(stderr: str, path: str) -> DecodeError:
    """Turn the stderr of a failed ffmpeg run into a :class:`DecodeError` with the closest reason."""
    lines = stderr.strip().splitlines()
    if _NO_DECODER.search(stderr):
        return DecodeError("unsupported_codec", f"{path}: ffmpeg has no decoder for the video stream")
    if any(hint in stderr for hint in _NO_STREAM):
        return DecodeError("no_video_stream", f"{path} has no video stream")
    if "No such file or directory" in stderr:
        return DecodeError("not_found", path)
    hint = next((h for h in CORRUPT_HINTS if h in stderr), lines[-1] if lines else "ffmpeg failed")
    return DecodeError("corrupt", f"{path}: {hint}")


def _put(slot: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            slot.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue


def _read_windows(
    fd: int,
    frame_shape: tuple[int, int, int],
    per_window: int,
    slot: queue.Queue,
    stop: threading.Event,
    planar: bool = False,
) -> None:
    """Reader thread: put arrays of ``per_window`` frames (the last one shorter), then None; or the OSError.

    ``frame_shape`` is (H, W, 3). With ``planar`` the pipe carries ``gbrp`` frames: they are read into one
    buffer, reused for every window, and interleaved from it into each window's RGB array.
    """
    height, width, channels = frame_shape
    frame_bytes = height * width * channels
    planes = np.empty((per_window, channels, height, width), dtype=np.uint8) if planar else None
    try:
        while not stop.is_set():
            window = planes if planar else np.empty((per_window, *frame_shape), dtype=np.uint8)
            view = memoryview(window.reshape(-1))
            filled = 0
            while filled < len(view):
                count = os.readv(fd, [view[filled:]])
                if count == 0:
                    break
                filled += count
            if filled >= frame_bytes:
                frames = window[: filled // frame_bytes]
                if planar:
                    frames_NHWC = np.empty((len(frames), *frame_shape), dtype=np.uint8)
                    _interleave(frames, frames_NHWC)
                    frames = frames_NHWC
                _put(slot, frames, stop)
            if filled < len(view):
                break
        _put(slot, None, stop)
    except OSError as error:
        _put(slot, error, stop)


@numba.njit(
    numba.void(numba.uint8[:, :, :, ::1], numba.uint8[:, :, :, ::1]),
    cache=True,
    nogil=True,
    boundscheck=False,
)
def _interleave(planes_NCHW, out_NHWC):
    """out = the ``gbrp`` frames (planes G, B, R) as RGB, in one pass over each frame."""
    for n in range(planes_NCHW.shape[0]):
        green = planes_NCHW[n, 0].reshape(-1)
        blue = planes_NCHW[n, 1].reshape(-1)
        red = planes_NCHW[n, 2].reshape(-1)
        dst = out_NHWC[n].reshape(-1)
        for i in range(green.shape[0]):
            dst[3 * i] = red[i]
            dst[3 * i + 1] = green[i]
            dst[3 * i + 2] = blue[i]


def _drain(stream, tail: bytearray) -> None:
    for chunk in iter(lambda: stream.read(65536), b""):
        tail += chunk
        del tail[:-STDERR_TAIL_BYTES]


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or above the system's pipe-max-size
        pass
    return read_fd, write_fd


def iter_windows(
    path: str, info: VideoInfo, config: DecodeConfig, usage: DecoderUsage | None = None
) -> Iterator[FrameWindow]:
    """Decode ``path`` once with ffmpeg and yield its frame windows (see the module docstring).

    ffmpeg starts at the first ``next()``; closing the generator early kills it. ``usage`` receives the CPU
    seconds of the ffmpeg processes when the windows end.
    """
    graph, (width_2d, height_2d) = filter_graph(info, config)
    shapes = ((height_2d, width_2d, 3), (config.size_3d, config.size_3d, 3))
    per_window = config.frames_per_window
    pipes = [_pipe(), _pipe()]
    # global and input options, then one rawvideo output per pipe
    cmd = [
        ffmpeg_binary(config.ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-filter_complex_threads", "1", "-threads", str(config.decode_threads), "-i", path,
        "-filter_complex", graph,
    ]  # fmt: skip
    formats = output_formats(info, config)
    for label, (_, write_fd), pix_fmt in zip(("[o1]", "[o2]"), pipes, formats):
        cmd += ["-map", label, "-f", "rawvideo", "-pix_fmt", pix_fmt, f"pipe:{write_fd}"]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=[write_fd for _, write_fd in pipes],
        )
    except OSError as error:
        for read_fd, _ in pipes:
            os.close(read_fd)
        if isinstance(error, FileNotFoundError):
            raise ffmpeg_missing(cmd[0]) from error
        raise
    finally:
        for _, write_fd in pipes:  # ffmpeg holds the write ends now: EOF comes when it exits
            os.close(write_fd)
    usage = DecoderUsage() if usage is None else usage
    planar = tuple(pix_fmt == "gbrp" for pix_fmt in formats)
    yield from _windows(proc, pipes, shapes, planar, per_window, path, info, config, usage)


def _windows(
    proc: subprocess.Popen,
    pipes: list[tuple[int, int]],
    shapes: tuple[tuple[int, int, int], ...],
    planar: tuple[bool, bool],
    per_window: tuple[int, int],
    path: str,
    info: VideoInfo,
    config: DecodeConfig,
    usage: DecoderUsage,
) -> Iterator[FrameWindow]:
    stop = threading.Event()
    slots: list[queue.Queue] = [queue.Queue(maxsize=1), queue.Queue(maxsize=1)]
    tail = bytearray()
    threads = [
        threading.Thread(target=_read_windows, args=(fd, shape, count, slot, stop, flat), daemon=True)
        for (fd, _), shape, flat, count, slot in zip(pipes, shapes, planar, per_window, slots)
    ]
    threads.append(threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True))
    for thread in threads:
        thread.start()
    try:
        finished = [False, False]
        filled_in = False  # a stream the fps filter left empty got the last frame
        window = 0
        while True:
            deadline = time.monotonic() + config.timeout_s
            parts: list[np.ndarray | None] = []
            for stream, slot in enumerate(slots):
                item = None
                if not finished[stream]:
                    try:
                        item = slot.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        raise DecodeError(
                            "timeout", f"no frames from ffmpeg within {config.timeout_s:g} s: {path}"
                        ) from None
                    if isinstance(item, OSError):
                        raise DecodeError("corrupt", f"{path}: reading frames from ffmpeg failed: {item}")
                    finished[stream] = item is None
                parts.append(item)
            if all(finished):
                break
            if window == 0:
                for stream in (0, 1):
                    if parts[stream] is None and parts[1 - stream] is not None:
                        parts[stream] = _last_frame(path, info, config, stream, shapes[stream], usage)
                        filled_in = True
            frames_2d, frames_3d = (
                part if part is not None else np.empty((0, *shape), dtype=np.uint8)
                for part, shape in zip(parts, shapes)
            )
            yield FrameWindow(
                start_s=window * config.window_seconds, frames_2d_THWC=frames_2d, frames_3d_THWC=frames_3d
            )
            window += 1
        returncode = _reap(proc, config.timeout_s, usage, path)
        threads[-1].join()
        stderr = tail.decode("utf-8", errors="replace")
        if returncode != 0 and not (filled_in and _NO_PACKETS in stderr):
            raise classify(stderr, path)
        if window == 0:
            raise DecodeError("empty", f"{path}: ffmpeg decoded no video frames")
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for thread in threads:
            thread.join()
        for read_fd, _ in pipes:
            os.close(read_fd)
        proc.stderr.close()


def _reap(proc: subprocess.Popen, timeout_s: float, usage: DecoderUsage, path: str) -> int:
    """Wait (at most ``timeout_s``) for ffmpeg to exit; add its CPU seconds to ``usage``; its exit code."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            usage.cpu_s += rusage.ru_utime + rusage.ru_stime
            return proc.returncode
        if time.monotonic() > deadline:
            raise DecodeError("timeout", f"ffmpeg did not exit within {timeout_s:g} s: {path}")
        time.sleep(REAP_POLL_S)


def _last_frame(
    path: str,
    info: VideoInfo,
    config: DecodeConfig,
    stream: int,
    shape: tuple[int, int, int],
    usage: DecoderUsage,
) -> np.ndarray:
    """The last frame of a (very short) video through ``stream``'s resize chain, as a (1, H, W, 3) array."""
    chain = resize_chains(info, config)[stream]
    cmd = [
        ffmpeg_binary(config.ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-threads", str(config.decode_threads), "-i", path, "-map", "0:v:0", "-vf", chain,
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        raise DecodeError("timeout", f"ffmpeg ran longer than {config.timeout_s:g} s: {path}") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage.cpu_s += after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    frame_bytes = int(np.prod(shape))
    if result.returncode != 0 or len(result.stdout) < frame_bytes:
        raise classify(result.stderr.decode("utf-8", errors="replace"), path)
    last = result.stdout[len(result.stdout) // frame_bytes * frame_bytes - frame_bytes :][:frame_bytes]
    return np.frombuffer(last, dtype=np.uint8).reshape(1, *shape).copy()
