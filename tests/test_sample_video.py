"""Frames of the sample corpus: shapes where and when the scene says, exact YUV colours, decodable encodes."""

from __future__ import annotations

from fractions import Fraction

import decord
import imageio_ffmpeg
import numpy as np
import pytest

from mcn.sample.video import (
    CODEC_PROFILES,
    COLOURS,
    I420Frame,
    StepScene,
    encode_video,
    iter_frames,
    motion_pose,
    render_background,
    rgb_to_yuv,
)

TINT = (40, 40, 48)


def test_steps_can_be_separated_by_a_pause_that_shows_only_the_background():
    scenes = [StepScene(0.0, 1.0, "red", "square", "grow", "plain", TINT),
              StepScene(2.0, 3.0, "blue", "circle", "left", "plain", TINT)]  # fmt: skip
    frames = list(iter_frames(scenes, 30, Fraction(10), 72, 128))
    spread = [float(f.y_HW.std()) for f in frames]
    assert min(spread[:10]) > 2 and max(spread[10:20]) < 0.5 and min(spread[20:]) > 2  # shape, pause, shape


def test_the_shape_moves_as_its_motion_says():
    scene = StepScene(0.0, 1.0, "yellow", "circle", "right", "plain", TINT)
    first, *_, last = iter_frames([scene], 10, Fraction(10), 90, 160)
    background_y = rgb_to_yuv(TINT)[0]

    def centre_x(frame: I420Frame) -> float:
        return float(np.nonzero(frame.y_HW != background_y)[1].mean()) / 160

    assert centre_x(first) == pytest.approx(motion_pose("right", 0.0)[0], abs=0.03)
    assert centre_x(last) == pytest.approx(motion_pose("right", 0.9)[0], abs=0.03)  # frame 9 of 10


@pytest.mark.parametrize("kind", ["plain", "striped", "checkered", "gradient", "dotted"])
def test_backgrounds_are_muted_and_only_plain_is_flat(kind):
    image = render_background(kind, TINT, 36, 64)
    assert image.shape == (36, 64, 3) and image.dtype == np.uint8
    assert (image == image[0, 0]).all() == (kind == "plain")
    with pytest.raises(ValueError, match="unknown background"):
        render_background("paisley", TINT, 36, 64)


def test_i420_frames_hold_the_bt601_colour():
    rgb = np.broadcast_to(np.asarray(COLOURS["green"], np.uint8), (4, 6, 3))
    frame = I420Frame.from_rgb(rgb)
    assert frame.data.size == 4 * 6 * 3 // 2
    assert (frame.y_HW == rgb_to_yuv(COLOURS["green"])[0]).all()
    assert (frame.u_hw == rgb_to_yuv(COLOURS["green"])[1]).all() and frame.v_hw.shape == (2, 3)
    assert tuple(rgb_to_yuv((0, 0, 0))) == (16, 128, 128) and tuple(rgb_to_yuv((255, 255, 255))) == (
        235,
        128,
        128,
    )


@pytest.mark.parametrize("profile", sorted(CODEC_PROFILES))
def test_every_codec_profile_encodes_decodable_frames_of_the_scene(tmp_path, profile):
    scene = StepScene(0.0, 1.0, "red", "square", "spin", "plain", TINT)
    fps = Fraction(25)
    path = tmp_path / f"clip.{CODEC_PROFILES[profile].container}"
    encode_video(path, iter_frames([scene], 25, fps, 96, 128), (128, 96), fps, profile, None,
                 imageio_ffmpeg.get_ffmpeg_exe())  # fmt: skip
    reader = decord.VideoReader(str(path))
    assert len(reader) == 25 and reader[0].shape == (96, 128, 3)
    frame = reader[12].asnumpy().astype(int)
    distance = np.abs(frame - np.asarray(COLOURS["red"])).sum(axis=-1)
    assert (distance < 90).mean() > 0.05  # the red square fills a good part of the frame


def test_a_failing_encode_says_why(tmp_path):
    scene = StepScene(0.0, 1.0, "red", "square", "spin", "plain", TINT)
    with pytest.raises(RuntimeError, match="could not encode"):
        encode_video(tmp_path / "missing" / "clip.mp4", iter_frames([scene], 5, Fraction(5), 64, 64),
                     (64, 64), Fraction(5), "mp4-h264", None, imageio_ffmpeg.get_ffmpeg_exe())  # fmt: skip
