"""The decord side of frame decoding: one sequential pass that yields both frame streams, window by window.

Frame picking. Output frame ``k`` of a stream at ``rate`` frames per second shows the video at time
``(k + 0.5) / rate`` (the middle of its interval): it is the last decoded frame whose presentation time
(decord's ``get_frame_timestamp``, relative to the first frame) is before that time (the first frame if none). A stream has
``ceil(end * rate - 0.5)`` frames, where ``end`` is the end time of the last frame. This works from real
timestamps, so 29.97 fps, 25 fps and variable-frame-rate videos land on the right seconds.

How this differs from the reference (ffmpeg's ``fps`` filter, one ffmpeg pass per stream):
- For constant-frame-rate input the ``fps`` filter (rounding "near") picks the same frames: it keeps, for each
  output slot, the last input frame whose time rounds into that slot, i.e. whose time is before
  ``(k + 0.5) / rate`` (a frame exactly at the midpoint rounds into the next slot there, so it is not picked
  here either). The reference's frame count can differ by one at the very end of the video.
- Timestamps start at the first video frame; the ``fps`` filter starts at the first frame's rounded time.
- Resizing: the 2D frames are scaled by decord (libswscale, bicubic) to the shorter side ``size_2d`` with the
  other side ``int(side * size_2d / shorter)``, as the reference computes it. The 3D frames are not decoded a
  second time: the centre square of each 2D-size frame is reduced to ``size_3d`` (the rounded mean of each
  2x2 block at the default 224 -> 112; Pillow's antialiased bilinear filter for other sizes), where the reference
  scales the full frame to shorter side 112 with bicubic, then crops.
  Pixel values therefore differ slightly from the reference's; the crop covers the same region.

Only the frames some stream needs are converted to RGB (decord decodes and skips the others), and they are
read sequentially with ``get_batch`` on ascending index chunks (decord seeks slowly).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import numpy as np
from PIL import Image

from mcn.extract.decode import DecodeConfig, DecodeError, FrameWindow, VideoInfo

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
CHUNK_FRAMES = 32  # frames per get_batch call: a few MB at 224p, large enough to amortise the call
# decord's reading thread can run ahead of its decoding thread and queue decoded frames (RSS grew to 1.6 GB on
# a 10-minute 24 fps video); reopening the reader every few minutes drops that queue, at the cost of decoding
# from the previous keyframe once per reopening.
REOPEN_SECONDS = 60.0


def output_size_2d(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``size`` and the other side scaled and truncated."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def pick_frames(starts_s: np.ndarray, end_s: float, rate: float) -> np.ndarray:
    """For k = 0 .. ceil(end * rate - 0.5) - 1, the index of the last frame starting before (k + 0.5) / rate."""
    num_out = max(0, math.ceil(end_s * rate - 0.5))
    targets = (np.arange(num_out) + 0.5) / rate
    return np.clip(np.searchsorted(starts_s, targets - 1e-6, side="left") - 1, 0, None)


def centre_squares_resized(frames_NHWC: np.ndarray, size: int) -> np.ndarray:
    """The centre square of each frame (side = the shorter side), resized to size x size.

    When the side is a small multiple of ``size`` (the default: 224 -> 112) each output pixel is the rounded
    mean of its block; otherwise Pillow's antialiased bilinear resize, frame by frame.
    """
    height, width = frames_NHWC.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    squares_NHWC = frames_NHWC[:, top : top + side, left : left + side]
    factor = side // size
    if side % size == 0 and factor <= 16:  # block sums of up to 16x16 uint8 values fit in uint16
        blocks = squares_NHWC.reshape(len(squares_NHWC), size, factor, size, factor, 3)
        total = np.zeros((len(squares_NHWC), size, size, 3), dtype=np.uint16)
        for row in range(factor):
            for column in range(factor):
                total += blocks[:, :, row, :, column]
        return ((total + factor * factor // 2) // (factor * factor)).astype(np.uint8)
    out_NHWC = np.empty((len(squares_NHWC), size, size, 3), dtype=np.uint8)
    for square, out in zip(squares_NHWC, out_NHWC):
        out[:] = Image.fromarray(np.ascontiguousarray(square)).resize((size, size), Image.BILINEAR)
    return out_NHWC


def _open(path: str, info: VideoInfo, config: DecodeConfig):
    import decord

    width, height = output_size_2d(info.width, info.height, config.size_2d)
    try:
        reader = decord.VideoReader(path, width=width, height=height, num_threads=config.decode_threads)
        num_frames = len(reader)
        times_N2 = reader.get_frame_timestamp(np.arange(num_frames)) if num_frames else np.zeros((0, 2))
    except (RuntimeError, decord.DECORDError) as error:
        raise classify(error, path) from None
    if num_frames == 0:
        raise DecodeError("empty", f"{path}: the decoder found no video frames")
    return reader, np.asarray(times_N2, dtype=np.float64)


def classify(error: Exception, path: str) -> DecodeError:
    """Turn a decord error into a :class:`DecodeError` with the closest reason."""
    text = str(error)
    if "cannot find video stream" in text:
        return DecodeError("no_video_stream", f"{path}: {text.strip().splitlines()[-1]}")
    if any(
        hint in text
        for hint in ("Decoder not found", "Unsupported codec", "codec not found", "not supported")
    ):
        return DecodeError("unsupported_codec", f"{path}: {text.strip().splitlines()[-1]}")
    return DecodeError(
        "corrupt", f"{path}: {text.strip().splitlines()[-1] if text.strip() else type(error).__name__}"
    )


def iter_windows(path: str, info: VideoInfo, config: DecodeConfig) -> Iterator[FrameWindow]:
    """Decode ``path`` once and yield its frame windows (see the module docstring for the picking rule)."""
    import decord

    reader, times_N2 = _open(path, info, config)
    starts_s = times_N2[:, 0] - times_N2[0, 0]
    end_s = float(times_N2[-1, 1] - times_N2[0, 0])
    picks_2d = pick_frames(starts_s, end_s, config.rate_2d)
    picks_3d = pick_frames(starts_s, end_s, config.rate_3d)
    per_window_2d = round(config.window_seconds * config.rate_2d)
    per_window_3d = round(config.window_seconds * config.rate_3d)
    num_windows = max(math.ceil(len(picks_2d) / per_window_2d), math.ceil(len(picks_3d) / per_window_3d))
    width, height = output_size_2d(info.width, info.height, config.size_2d)
    carried: tuple[int, np.ndarray] | None = None  # the last frame read: the next window may start on it
    windows_per_reader = max(1, int(REOPEN_SECONDS // config.window_seconds))
    for window in range(num_windows):
        if window > 0 and window % windows_per_reader == 0:
            del reader
            reader = _open(path, info, config)[0]
        window_2d = picks_2d[window * per_window_2d : (window + 1) * per_window_2d]
        window_3d = picks_3d[window * per_window_3d : (window + 1) * per_window_3d]
        frames_2d = np.empty((len(window_2d), height, width, 3), dtype=np.uint8)
        frames_3d = np.empty((len(window_3d), config.size_3d, config.size_3d, 3), dtype=np.uint8)
        needed = np.unique(np.concatenate([window_2d, window_3d]))
        for first in range(0, len(needed), CHUNK_FRAMES):
            indices = needed[first : first + CHUNK_FRAMES]
            try:
                batch_NHWC = _read(reader, indices, carried)
            except (RuntimeError, decord.DECORDError) as error:
                raise classify(error, path) from None
            if batch_NHWC.shape[1:3] != (height, width):
                raise DecodeError(
                    "corrupt", f"{path}: frame size changed to {batch_NHWC.shape[2]}x{batch_NHWC.shape[1]}"
                )
            _place(frames_2d, window_2d, indices, batch_NHWC, None)
            _place(
                frames_3d,
                window_3d,
                indices,
                batch_NHWC,
                lambda batch: centre_squares_resized(batch, config.size_3d),
            )
            carried = (int(indices[-1]), batch_NHWC[-1])
        yield FrameWindow(
            start_s=window * config.window_seconds, frames_2d_THWC=frames_2d, frames_3d_THWC=frames_3d
        )


def _read(reader, indices: np.ndarray, carried: tuple[int, np.ndarray] | None) -> np.ndarray:
    if carried is not None and indices[0] == carried[0]:
        if len(indices) == 1:
            return carried[1][None]
        return np.concatenate([carried[1][None], reader.get_batch(indices[1:].tolist()).asnumpy()])
    return reader.get_batch(indices.tolist()).asnumpy()


def _place(
    out_THWC: np.ndarray,
    picks: np.ndarray,
    indices: np.ndarray,
    batch_NHWC: np.ndarray,
    transform: Callable | None,
) -> None:
    """Write the frames of ``batch_NHWC`` (decoded at ``indices``) into every output slot that picks them."""
    slots = np.flatnonzero((picks >= indices[0]) & (picks <= indices[-1]))
    if len(slots) == 0:
        return
    positions = np.searchsorted(indices, picks[slots])
    if transform is None:
        out_THWC[slots] = batch_NHWC[positions]
        return
    unique_positions, inverse = np.unique(positions, return_inverse=True)
    out_THWC[slots] = transform(batch_NHWC[unique_positions])[inverse]


def limit_malloc_arenas() -> None:
    """Make glibc malloc use one arena in this process.

    decord allocates frames on its decoding thread and they are freed on the reading thread; with glibc's
    per-thread arenas that fragments memory until RSS is hundreds of MB above what is live (more when the
    consumer is slow). One arena keeps it flat. Called in the decoding child; an in-process caller can set
    ``MALLOC_ARENA_MAX=1`` in the environment instead.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def run_child(
    sender: Connection,
    path: str,
    info: VideoInfo,
    config: DecodeConfig,
    source: Callable[..., Iterator[FrameWindow]],
) -> None:
    """Child-process entry: stream ``source``'s windows as (header, 2D bytes, 3D bytes), then "done" or an error."""
    limit_malloc_arenas()
    try:
        for window in source(path, info, config):
            sender.send(("window", window.start_s, window.frames_2d_THWC.shape, window.frames_3d_THWC.shape))
            sender.send_bytes(np.ascontiguousarray(window.frames_2d_THWC).reshape(-1))
            sender.send_bytes(np.ascontiguousarray(window.frames_3d_THWC).reshape(-1))
        sender.send(("done",))
    except DecodeError as error:
        sender.send(("error", error.reason, error.detail))
    except (
        Exception
    ) as error:  # a decoder failure this module does not know; the parent records it as corrupt
        sender.send(("error", "corrupt", f"{path}: {type(error).__name__}: {error}"))
    finally:
        sender.close()
