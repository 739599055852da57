"""The decord side of frame decoding: one sequential pass that yields both frame streams, window by window.

Frame picking. Output frame ``k`` of a stream at ``rate`` frames per second shows the video at time
``(k + 0.5) / rate`` (the middle of its interval): it is the last decoded frame whose presentation time
(decord's ``get_frame_timestamp``, relative to the first frame) is before that time (the first frame if none). A
stream has ``ceil(end * rate - 0.5)`` frames, where ``end`` is the end time of the last frame, and at least one:
a video shorter than half an output interval gets its last frame. This works from real timestamps, so 29.97 fps,
25 fps and variable-frame-rate videos land on the right seconds.

How this differs from the reference (ffmpeg's ``fps`` filter, one ffmpeg pass per stream):
- For constant-frame-rate input the ``fps`` filter (rounding "near") picks the same frames: it keeps, for each
  output slot, the last input frame whose time rounds into that slot, i.e. whose time is before
  ``(k + 0.5) / rate`` (a frame exactly at the midpoint rounds into the next slot there, so it is not picked
  here either). The reference's frame count can differ by one at the very end of the video.
- Timestamps start at the first video frame; the ``fps`` filter starts at the first frame's rounded time.
- Resizing: the 2D frames are scaled by decord to the shorter side ``size_2d`` with the other side
  ``int(side * size_2d / shorter)``, as the reference computes it. decord's filter graph is a plain
  ``scale=W:H`` of its bundled FFmpeg 4.1, whose default kernel is **bilinear** (the reference's ffmpeg command
  line uses bicubic); its frames equal those of ``scale=W:H:flags=bilinear`` in today's ffmpeg. The 3D frames are
  not decoded a second time: the centre square of each 2D-size frame is reduced to ``size_3d`` (the rounded mean
  of each block when the square's side is a multiple of ``size_3d``, i.e. 2x2 blocks at the default 224 -> 112;
  Pillow's antialiased bilinear filter for other sizes), where the reference scales the full frame to shorter
  side 112 with bicubic, then crops. Pixel values therefore differ from the reference's; the crop covers the
  same region.
- Rotation: decord applies the display matrix like ffmpeg's autorotation, so frames are upright; it must be
  given the output size in the displayed orientation (:attr:`VideoInfo.display_size`).

Where the time goes: decord decodes every frame (the 24 fps stream needs nearly all of them) and converts each
frame a stream uses to RGB at the 2D size inside its own decoding thread; that conversion costs about as much as
a third to a half of the decoding and bounds this backend (docs/extraction.md has the profile). The rest is
kept small: frames are read sequentially with ``get_batch`` on ascending index chunks (decord seeks slowly),
taken over by numpy through DLPack without a copy, and the block means run in one compiled pass per frame
(:func:`_block_means`, numba) straight from the decoded batch into the window's array.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator

import numba
import numpy as np
from PIL import Image

from mcn.extract.decode_types import DecodeConfig, DecodeError, FrameWindow, VideoInfo, output_size_2d

M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
CHUNK_FRAMES = 32  # frames per get_batch call: a few MB at 224p, large enough to amortise the call
AVERROR_DECODER_NOT_FOUND = -1128613112  # FFERRTAG(0xF8, 'D', 'E', 'C'): the stream's codec has no decoder

__all__ = ["centre_squares_resized", "classify", "iter_windows", "limit_malloc_arenas", "pick_frames"]


def pick_frames(starts_s: np.ndarray, end_s: float, rate: float) -> np.ndarray:
    """For k = 0 .. ceil(end * rate - 0.5) - 1, the index of the last frame starting before (k + 0.5) / rate.

    A video of at least one frame gets at least one output frame (the last frame shown before 0.5 / rate).
    """
    num_out = max(1, math.ceil(end_s * rate - 0.5)) if len(starts_s) else 0
    targets = (np.arange(num_out) + 0.5) / rate
    return np.clip(np.searchsorted(starts_s, targets - 1e-6, side="left") - 1, 0, None)


def centre_squares_resized(
    frames_NHWC: np.ndarray, size: int, picks: np.ndarray | None = None, out_NHWC: np.ndarray | None = None
) -> np.ndarray:
    """The centre square of each frame (of ``frames_NHWC[picks]`` when given; side = the shorter side), resized
    to size x size, written into ``out_NHWC`` when given.

    When the side is a multiple of ``size`` (the default: 224 -> 112) each output pixel is the rounded mean of its
    block, ``(sum + area // 2) // area``; otherwise Pillow's antialiased bilinear resize, frame by frame.
    """
    height, width = frames_NHWC.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    picks = np.arange(len(frames_NHWC)) if picks is None else np.asarray(picks)
    if out_NHWC is None:
        out_NHWC = np.empty((len(picks), size, size, 3), dtype=np.uint8)
    if side % size == 0:
        frames_NHWC = np.ascontiguousarray(frames_NHWC)
        _block_means(frames_NHWC, top, left, side // size, picks.astype(np.int64), out_NHWC)
        return out_NHWC
    squares_NHWC = frames_NHWC[:, top : top + side, left : left + side]
    for pick, out in zip(picks, out_NHWC):
        square = Image.fromarray(np.ascontiguousarray(squares_NHWC[pick]))
        out[:] = square.resize((size, size), Image.BILINEAR)
    return out_NHWC


@numba.njit(
    numba.void(
        numba.types.Array(numba.uint8, 4, "C", readonly=True),  # decord's frames, shared read-only
        numba.int64,
        numba.int64,
        numba.int64,
        numba.int64[::1],
        numba.uint8[:, :, :, ::1],
    ),
    cache=True,
    nogil=True,
    boundscheck=False,
)
def _block_means(frames_NHWC, top, left, factor, positions, out_NHWC):
    """out[n] = rounded means of the factor x factor blocks of frames[positions[n]]'s square at (top, left).

    One pass over the square: the rows of a block are summed into one row of uint16 sums, whose groups of
    ``factor`` pixels then make the output row. Exact integer arithmetic, bit-identical to summing each block.
    """
    size = out_NHWC.shape[1]
    width = size * factor * 3  # values in one row of the square
    start = left * 3
    sums = np.empty(width, np.uint16)
    if factor == 2:  # the default (224 -> 112), written out so that the compiler vectorises the row sums
        for n in range(positions.shape[0]):
            frame = frames_NHWC[positions[n]]
            for y in range(size):
                row0 = frame[top + 2 * y].reshape(-1)[start : start + width]
                row1 = frame[top + 2 * y + 1].reshape(-1)[start : start + width]
                for k in range(width):
                    sums[k] = np.uint16(row0[k]) + np.uint16(row1[k])
                dst = out_NHWC[n, y].reshape(-1)
                for x in range(size):
                    for c in range(3):
                        dst[3 * x + c] = (sums[6 * x + c] + sums[6 * x + 3 + c] + 2) >> 2
        return
    area = factor * factor
    for n in range(positions.shape[0]):
        frame = frames_NHWC[positions[n]]
        for y in range(size):
            sums[:] = 0
            for dy in range(factor):
                row = frame[top + y * factor + dy].reshape(-1)[start : start + width]
                for k in range(width):
                    sums[k] += row[k]
            dst = out_NHWC[n, y].reshape(-1)
            for x in range(size):
                for c in range(3):
                    total = area // 2
                    for dx in range(factor):
                        total += np.int64(sums[(x * factor + dx) * 3 + c])
                    dst[3 * x + c] = total // area


def _open(path: str, info: VideoInfo, config: DecodeConfig):
    import decord

    width, height = output_size_2d(*info.display_size, config.size_2d)
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
    if "cannot find video stream" in text and str(AVERROR_DECODER_NOT_FOUND) in text:
        return DecodeError("unsupported_codec", f"{path}: decord has no decoder for the video stream's codec")
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
    width, height = output_size_2d(*info.display_size, config.size_2d)
    carried: tuple[int, np.ndarray] | None = None  # the last frame read: the next window may start on it
    for window in range(num_windows):
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
            _place_2d(frames_2d, window_2d, indices, batch_NHWC)
            _place_3d(frames_3d, window_3d, indices, batch_NHWC, config.size_3d)
            carried = (int(indices[-1]), batch_NHWC[-1])
        yield FrameWindow(
            start_s=window * config.window_seconds, frames_2d_THWC=frames_2d, frames_3d_THWC=frames_3d
        )


def _read(reader, indices: np.ndarray, carried: tuple[int, np.ndarray] | None) -> np.ndarray:
    if carried is not None and indices[0] == carried[0]:
        if len(indices) == 1:
            return carried[1][None]
        return np.concatenate([carried[1][None], _as_numpy(reader.get_batch(indices[1:].tolist()))])
    return _as_numpy(reader.get_batch(indices.tolist()))


class _DLPack:
    """A decord NDArray offered to :func:`numpy.from_dlpack` (decord predates the ``__dlpack__`` protocol)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None, **kwargs):
        return self.array.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0


def _as_numpy(array) -> np.ndarray:
    """The frames of a decord NDArray as a numpy array, sharing its memory (``asnumpy()`` copies them)."""
    try:
        return np.from_dlpack(_DLPack(array))
    except (AttributeError, BufferError, RuntimeError, TypeError):  # an older numpy or decord: copy
        return array.asnumpy()


def _slots(picks: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The output slots whose picked frame is in ``indices`` (ascending), and that frame's position there."""
    slots = np.flatnonzero((picks >= indices[0]) & (picks <= indices[-1]))
    return slots, np.searchsorted(indices, picks[slots])


def _place_2d(out_THWC: np.ndarray, picks: np.ndarray, indices: np.ndarray, batch_NHWC: np.ndarray) -> None:
    """Write the frames of ``batch_NHWC`` (decoded at ``indices``) into every output slot that picks them."""
    slots, positions = _slots(picks, indices)
    if len(slots):
        out_THWC[slots] = batch_NHWC[positions]


def _place_3d(
    out_THWC: np.ndarray, picks: np.ndarray, indices: np.ndarray, batch_NHWC: np.ndarray, size: int
) -> None:
    """Like :func:`_place_2d` for the centre squares at ``size``, straight into the window's array."""
    slots, positions = _slots(picks, indices)
    if len(slots):  # picks ascend, so the slots are a range
        centre_squares_resized(batch_NHWC, size, positions, out_THWC[slots[0] : slots[-1] + 1])


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
    libc.mallopt(M_ARENA_MAX, 1)
