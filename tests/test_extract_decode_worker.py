"""The decord backend: its documented frames, computed here from decord's raw frames; the block-mean kernel."""

from __future__ import annotations

import math

import decord
import media
import numpy as np
import pytest
from media import make_counter_video, make_vfr_video, make_video

from mcn.extract.decode import DecodeConfig, probe
from mcn.extract.decode_worker import centre_squares_resized

CONFIG = DecodeConfig(window_seconds=2.0)


def documented_frames(path, size_2d: int = 224, size_3d: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """The decord backend's documented output, written out independently of mcn.extract.decode_worker.

    Every frame from decord at the 2D size (shorter side 224, other side truncated); output frame k of a stream
    at rate r is the last frame starting before (k + 0.5) / r, ceil(end * r - 0.5) frames but at least one;
    3D frames are the centre square's 2x2 block means, rounded half up.
    """
    width, height = probe(path).display_size
    shorter = min(width, height)
    out_w, out_h = int(width * size_2d / shorter), int(height * size_2d / shorter)
    reader = decord.VideoReader(str(path), width=out_w, height=out_h, num_threads=1)
    every_NHWC = reader.get_batch(list(range(len(reader)))).asnumpy()
    times = reader.get_frame_timestamp(np.arange(len(reader)))
    starts, end = times[:, 0] - times[0, 0], times[-1, 1] - times[0, 0]

    def picks(rate: float) -> list[int]:
        count = max(1, math.ceil(end * rate - 0.5))
        return [max(0, int(np.sum(starts < (k + 0.5) / rate - 1e-6)) - 1) for k in range(count)]

    frames_2d = every_NHWC[picks(1.0)]
    top, left = (out_h - size_2d) // 2, (out_w - size_2d) // 2
    squares = every_NHWC[picks(24.0), top : top + size_2d, left : left + size_2d].astype(np.int32)
    factor = size_2d // size_3d
    blocks = squares.reshape(len(squares), size_3d, factor, size_3d, factor, 3).sum(axis=(2, 4))
    frames_3d = ((blocks + factor * factor // 2) // (factor * factor)).astype(np.uint8)
    return frames_2d, frames_3d


def decode_all(path, config: DecodeConfig = CONFIG, in_process: bool = True):
    return media.decode_all(path, config, in_process=in_process)


def rotated(source, path, degrees: int):
    return media.with_display_rotation(source, path, degrees)


VIDEOS = {
    "29.97 fps counter": lambda d: make_counter_video(d / "c.mp4", (("30000/1001", 5.2),)),
    "10 fps (frames fill several 3D slots)": lambda d: make_video(
        d / "ten.mp4", seconds=3.0, fps=10, size=(320, 180), audio=False
    ),  # fmt: skip
    "variable rate": lambda d: make_vfr_video(d / "vfr.mp4", 4.0, (160, 120)),
    "portrait": lambda d: make_video(d / "p.mp4", seconds=3.0, size=(90, 160), audio=False),
    "odd size, mpeg4": lambda d: make_video(
        d / "o.mp4", seconds=3.0, fps="30000/1001", size=(97, 61), audio=False, codec="mpeg4"
    ),  # fmt: skip
    "720p": lambda d: make_video(d / "hd.mp4", seconds=2.5, fps=30, size=(1280, 720), audio=False),
    "vp9 webm with audio": lambda d: make_video(
        d / "v.webm", seconds=3.0, fps=30, size=(176, 144), codec="libvpx-vp9"
    ),  # fmt: skip
    "rotated 270": lambda d: rotated(make_video(d / "l.mp4", seconds=2.0, size=(320, 180)), d / "r.mp4", -90),
    "0.32 s": lambda d: make_video(d / "s.mp4", seconds=0.32, size=(160, 120)),
}


@pytest.mark.parametrize("case", sorted(VIDEOS))
def test_frames_are_the_documented_ones(tmp_path, case):
    path = VIDEOS[case](tmp_path)
    frames_2d, frames_3d = decode_all(path)
    expected_2d, expected_3d = documented_frames(path)
    assert frames_2d.shape == expected_2d.shape and frames_3d.shape == expected_3d.shape
    np.testing.assert_array_equal(frames_2d, expected_2d)
    np.testing.assert_array_equal(frames_3d, expected_3d)


def test_child_process_gives_the_same_frames(tmp_path):
    path = make_video(tmp_path / "hd.mp4", seconds=2.5, fps=30, size=(1280, 720), audio=False)
    in_process = decode_all(path)
    in_child = decode_all(path, in_process=False)
    for ours, theirs in zip(in_process, in_child):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("size", "side"), [(112, 224), (24, 48), (32, 96), (7, 7)])
def test_block_means_are_rounded_block_averages(size, side):
    """The compiled kernel against numpy, for factors 2, 2, 3 and 1, on a subset of frames given twice."""
    rng = np.random.default_rng(size)
    frames = rng.integers(0, 256, (5, side, side + 11, 3), dtype=np.uint8)
    picks = np.array([0, 2, 2, 4])
    factor = side // size
    squares = frames[picks][:, :, 5 : 5 + side].astype(np.int64)
    blocks = squares.reshape(len(picks), size, factor, size, factor, 3).sum(axis=(2, 4))
    expected = (blocks + factor * factor // 2) // (factor * factor)
    np.testing.assert_array_equal(centre_squares_resized(frames, size, picks), expected)
