"""The ffmpeg backend: frame for frame the reference's two ffmpeg commands; the fast kernel; very short videos."""

from __future__ import annotations

import subprocess

import media
import numpy as np
import pytest
from media import FFMPEG, make_counter_video, make_vfr_video, make_video

from mcn.errors import MCNError
from mcn.extract.decode import DecodeConfig, DecoderUsage, iter_frame_windows, probe
from mcn.extract.decode_ffmpeg import output_formats

CONFIG = DecodeConfig(window_seconds=2.0, backend="ffmpeg")


def reference_frames(path, chain: str, width: int, height: int) -> np.ndarray:
    """The frames one of the reference's own ffmpeg commands produces (one decoding pass per stream)."""
    cmd = [FFMPEG, "-v", "error", "-i", str(path), "-vf", chain, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def reference_streams(path) -> tuple[np.ndarray, np.ndarray]:
    """The reference recipe written out: 1 fps, shorter side 224; 24 fps, shorter side 112, centre crop 112."""
    width, height = probe(path).display_size  # ffmpeg autorotates, so sizes follow the displayed frame

    def scaled(size: int) -> tuple[int, int]:
        shorter = min(width, height)
        return int(width * size / shorter), int(height * size / shorter)

    width_2d, height_2d = scaled(224)
    width_3d, height_3d = scaled(112)
    left, top = int((width_3d - 112) / 2), int((height_3d - 112) / 2)
    frames_2d = reference_frames(path, f"fps=1,scale={width_2d}:{height_2d}", width_2d, height_2d)
    chain_3d = f"fps=24,scale={width_3d}:{height_3d},crop=112:112:{left}:{top}"
    return frames_2d, reference_frames(path, chain_3d, 112, 112)


def decode_all(path, config: DecodeConfig = CONFIG) -> tuple[np.ndarray, np.ndarray]:
    return media.decode_all(path, config)


def rotated(source, path, degrees: int):
    return media.with_display_rotation(source, path, degrees)


VIDEOS = {
    "29.97 fps counter": lambda d: make_counter_video(d / "c.mp4", (("30000/1001", 5.2),)),
    "variable rate": lambda d: make_vfr_video(d / "vfr.mp4", 4.0, (160, 120)),
    "portrait": lambda d: make_video(d / "p.mp4", seconds=3.0, size=(90, 160), audio=False),
    "odd size, mpeg4": lambda d: make_video(
        d / "o.mp4", seconds=3.0, fps="30000/1001", size=(97, 61), audio=False, codec="mpeg4"
    ),  # fmt: skip
    "720p": lambda d: make_video(d / "hd.mp4", seconds=2.5, fps=30, size=(1280, 720), audio=False),
    "vp9 webm with audio": lambda d: make_video(
        d / "v.webm", seconds=3.0, fps=30, size=(176, 144), codec="libvpx-vp9"
    ),  # fmt: skip
    # odd scaled widths: the backend reads planar RGB (gbrp) there, which must be the reference's rgb24 frames
    "4:3 full range": lambda d: make_video(
        d / "j.mp4", seconds=2.0, size=(160, 120), audio=False, extra_args=("-pix_fmt", "yuvj420p")
    ),  # fmt: skip
    "odd 2D width, 4:4:4": lambda d: make_video(
        d / "f.mp4", seconds=2.0, size=(720, 404), audio=False, extra_args=("-pix_fmt", "yuv444p")
    ),  # fmt: skip
    "10-bit": lambda d: make_video(
        d / "t.mp4", seconds=2.0, size=(640, 360), audio=False, extra_args=("-pix_fmt", "yuv420p10le")
    ),  # fmt: skip
    "rotated 90": lambda d: rotated(make_video(d / "l.mp4", seconds=2.0, size=(320, 180)), d / "r.mp4", 90),
}


@pytest.mark.parametrize("case", sorted(VIDEOS))
def test_frames_equal_the_reference_commands(tmp_path, case):
    """One pass with a split graph gives exactly the frames of the reference's two separate ffmpeg passes."""
    path = VIDEOS[case](tmp_path)
    info = probe(path)
    planar = output_formats(info, CONFIG)
    width, height = info.display_size
    odd = tuple(int(width * size / min(width, height)) % 2 == 1 for size in (224, 112))
    assert planar == tuple("gbrp" if o else "rgb24" for o in odd)
    frames_2d, frames_3d = decode_all(path)
    expected_2d, expected_3d = reference_streams(path)
    assert frames_2d.shape == expected_2d.shape and frames_3d.shape == expected_3d.shape
    np.testing.assert_array_equal(frames_2d, expected_2d)
    np.testing.assert_array_equal(frames_3d, expected_3d)


def test_fast_kernel_crops_first_and_stays_close(tmp_path):
    path = make_video(tmp_path / "hd.mp4", seconds=2.0, fps=30, size=(1280, 720), audio=False)
    frames_2d, frames_3d = decode_all(path)
    fast_2d, fast_3d = decode_all(path, DecodeConfig(window_seconds=2.0, backend="ffmpeg", kernel="fast"))
    np.testing.assert_array_equal(fast_2d, frames_2d)  # the 2D branch is the reference's
    assert fast_3d.shape == frames_3d.shape
    difference = np.abs(fast_3d.astype(np.int16) - frames_3d).mean()
    assert (
        0 < difference < 8
    )  # a fraction of a pixel's shift of the crop and another kernel, not another region
    with pytest.raises(MCNError, match="ffmpeg"):
        DecodeConfig(kernel="fast")


@pytest.mark.parametrize("seconds", [0.04, 0.32, 0.48])
def test_very_short_videos_get_one_2d_frame(tmp_path, seconds):
    """The fps filter keeps no 1 fps frame under 0.5 s (and ffmpeg then fails the empty output): the backend
    gives the last frame instead, as the decord backend does, and calls nothing corrupt."""
    path = make_video(tmp_path / "short.mp4", seconds=seconds, fps=25, size=(160, 120))
    usage = DecoderUsage()
    windows = list(iter_frame_windows(path, probe(path), CONFIG, usage=usage))
    assert len(windows) == 1 and windows[0].frames_2d_THWC.shape == (1, 224, 298, 3)
    assert len(windows[0].frames_3d_THWC) >= 1
    last = reference_frames(path, "scale=298:224", 298, 224)[-1]
    np.testing.assert_array_equal(windows[0].frames_2d_THWC[0], last)
    assert usage.cpu_s > 0  # both ffmpeg runs are counted


def test_usage_counts_ffmpeg_cpu_time(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=4.0, size=(640, 360), audio=False)
    usage = DecoderUsage()
    for _ in iter_frame_windows(path, probe(path), CONFIG, usage=usage):
        pass
    assert 0 < usage.cpu_s < 60
