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

The two outputs are raw RGB on two pipes (``pipe:N`` with ``pass_fds``). One reader thread per pipe fills whole
windows straight into numpy arrays (``os.readv``, no extra copies) and hands them over through a one-slot queue,
so memory is bounded by a few windows whatever the video length; a third thread keeps the tail of stderr. Both
pipes must be drained at once: ffmpeg stops when either is full. ffmpeg is killed when no window arrives within
``config.timeout_s`` (``DecodeError("timeout")``), and when the consumer stops early.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from mcn.extract.decode_types import (
    CORRUPT_HINTS,
    DecodeConfig,
    DecodeError,
    FrameWindow,
    VideoInfo,
    ffmpeg_binary,
    ffmpeg_missing,
    output_size_2d,
)

PIPE_BYTES = 1 << 20  # pipe capacity asked for (Linux): fewer wake-ups than the default 64 KB
STDERR_TAIL_BYTES = 64 * 1024
POLL_S = 0.1  # how often a blocked reader thread checks whether it should stop
_NO_DECODER = re.compile(r"no decoder found for|Decoder \(codec \S+\) not found|Unknown decoder")
_NO_STREAM = ("matches no streams", "does not contain any stream")


def _rate(rate: float) -> str:
    return str(Fraction(rate).limit_denominator(1_000_000))


def filter_graph(info: VideoInfo, config: DecodeConfig) -> tuple[str, tuple[int, int]]:
    """The ``-filter_complex`` graph (outputs ``[o1]`` 2D, ``[o2]`` 3D) and the 2D frame (width, height)."""
    display = info.display_size
    width_2d, height_2d = output_size_2d(*display, config.size_2d)
    width_3d, height_3d = output_size_2d(*display, config.size_3d)
    left, top = (width_3d - config.size_3d) // 2, (height_3d - config.size_3d) // 2
    graph = (
        "[0:v:0]split=2[a][b];"
        f"[a]fps={_rate(config.rate_2d)},scale={width_2d}:{height_2d}[o1];"
        f"[b]fps={_rate(config.rate_3d)},scale={width_3d}:{height_3d},"
        f"crop={config.size_3d}:{config.size_3d}:{left}:{top}[o2]"
    )
    return graph, (width_2d, height_2d)


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
    fd: int, frame_shape: tuple[int, int, int], per_window: int, slot: queue.Queue, stop: threading.Event
) -> None:
    """Reader thread: put arrays of ``per_window`` frames (the last one shorter), then None; or the OSError."""
    frame_bytes = int(np.prod(frame_shape))
    try:
        while not stop.is_set():
            window = np.empty((per_window, *frame_shape), dtype=np.uint8)
            view = memoryview(window.reshape(-1))
            filled = 0
            while filled < len(view):
                count = os.readv(fd, [view[filled:]])
                if count == 0:
                    break
                filled += count
            if filled >= frame_bytes:
                _put(slot, window[: filled // frame_bytes], stop)
            if filled < len(view):
                break
        _put(slot, None, stop)
    except OSError as error:
        _put(slot, error, stop)


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


def iter_windows(path: str, info: VideoInfo, config: DecodeConfig) -> Iterator[FrameWindow]:
    """Decode ``path`` once with ffmpeg and yield its frame windows (see the module docstring).

    ffmpeg starts at the first ``next()``; closing the generator early kills it.
    """
    graph, (width_2d, height_2d) = filter_graph(info, config)
    shapes = ((height_2d, width_2d, 3), (config.size_3d, config.size_3d, 3))
    per_window = (
        round(config.window_seconds * config.rate_2d),
        round(config.window_seconds * config.rate_3d),
    )
    pipes = [_pipe(), _pipe()]
    # global and input options, then one rawvideo output per pipe
    cmd = [
        ffmpeg_binary(config.ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-filter_complex_threads", "1", "-threads", str(config.decode_threads), "-i", path,
        "-filter_complex", graph,
    ]  # fmt: skip
    for label, (_, write_fd) in zip(("[o1]", "[o2]"), pipes):
        cmd += ["-map", label, "-f", "rawvideo", "-pix_fmt", "rgb24", f"pipe:{write_fd}"]
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
    yield from _windows(proc, pipes, shapes, per_window, path, config)


def _windows(
    proc: subprocess.Popen,
    pipes: list[tuple[int, int]],
    shapes: tuple[tuple[int, int, int], ...],
    per_window: tuple[int, int],
    path: str,
    config: DecodeConfig,
) -> Iterator[FrameWindow]:
    stop = threading.Event()
    slots: list[queue.Queue] = [queue.Queue(maxsize=1), queue.Queue(maxsize=1)]
    tail = bytearray()
    threads = [
        threading.Thread(target=_read_windows, args=(fd, shape, count, slot, stop), daemon=True)
        for (fd, _), shape, count, slot in zip(pipes, shapes, per_window, slots)
    ]
    threads.append(threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True))
    for thread in threads:
        thread.start()
    try:
        finished = [False, False]
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
            frames_2d, frames_3d = (
                part if part is not None else np.empty((0, *shape), dtype=np.uint8)
                for part, shape in zip(parts, shapes)
            )
            yield FrameWindow(
                start_s=window * config.window_seconds, frames_2d_THWC=frames_2d, frames_3d_THWC=frames_3d
            )
            window += 1
        try:
            returncode = proc.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            raise DecodeError(
                "timeout", f"ffmpeg did not exit within {config.timeout_s:g} s: {path}"
            ) from None
        threads[-1].join()
        if returncode != 0:
            raise classify(tail.decode("utf-8", errors="replace"), path)
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
