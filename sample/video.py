"""Pictures for the sample corpus: a saturated shape doing one motion on a patterned background per step,
rendered with numpy (only the shape's bounding box is recomputed per frame) and piped into ffmpeg.

Frames are drawn straight into planar YUV 4:2:0 (I420, BT.601 limited range, what ffmpeg assumes for
untagged video): the encoders take them as they are, which saves ffmpeg's slow RGB conversion and half the
pipe traffic. Positions and sizes are fractions of the frame, so every resolution, portrait included,
shows the same scene.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 25, 25),
    "green": (20, 200, 40),
    "blue": (30, 80, 245),
    "yellow": (250, 225, 10),
    "purple": (150, 30, 210),
    "orange": (255, 130, 0),
    "pink": (255, 80, 190),
    "cyan": (0, 215, 230),
}
SHAPE_RADIUS = 0.22  # of the frame's shorter side, at size factor 1
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
MOTIONS = ("left", "right", "up", "down", "spin", "grow", "shrink", "bounce")
BACKGROUNDS = ("plain", "striped", "checkered", "gradient", "dotted")
# Muted tints keep the shape the most salient thing in the frame.
BACKGROUND_TINTS = ((40, 40, 48), (70, 70, 70), (30, 45, 70), (60, 50, 40), (35, 60, 45), (200, 200, 195))


@dataclass(frozen=True)
class CodecProfile:
    container: str
    video_codec: str
    audio_codec: str
    video_args: tuple[str, ...]
    audio_args: tuple[str, ...]


# Encoder settings chosen for speed: x264 ultrafast, libvpx realtime at its fastest speed.
_X264 = tuple(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "26"])
_VP9 = tuple(
    [
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "0",
        "-crf",
        "40",
        "-row-mt",
        "0",
    ]
)
_VP8 = tuple(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "16", "-b:v", "600k"])
_OPUS = tuple(["-c:a", "libopus", "-b:a", "48k", "-ar", "48000"])
CODEC_PROFILES = {
    "mp4-h264": CodecProfile("mp4", "h264", "aac", _X264, ("-c:a", "aac", "-b:a", "64k")),
    "webm-vp9": CodecProfile("webm", "vp9", "opus", _VP9, _OPUS),
    "webm-vp8": CodecProfile("webm", "vp8", "vorbis", _VP8, ("-c:a", "libvorbis", "-q:a", "2")),
    "mkv-h264": CodecProfile("mkv", "h264", "mp3", _X264, ("-c:a", "libmp3lame", "-b:a", "64k")),
    "mkv-vp9": CodecProfile("mkv", "vp9", "opus", _VP9, _OPUS),
}


@dataclass(frozen=True)
class StepScene:
    """What one step shows from ``start`` to ``end`` seconds."""

    start: float
    end: float
    colour: str
    shape: str
    motion: str
    background: str
    tint: tuple[int, int, int]


def render_background(kind: str, tint: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    """A static ``(H, W, 3)`` background: plain, striped, checkered, gradient or dotted."""
    unit = max(height, width) / 12.0
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if kind == "plain":
        weight = np.zeros((height, width), np.float32)
    elif kind == "striped":
        weight = np.broadcast_to(((ys + xs * 0.5) // unit) % 2, (height, width))
    elif kind == "checkered":
        weight = ((ys // unit) + (xs // unit)) % 2
    elif kind == "gradient":
        weight = np.broadcast_to(ys / height * 0.6 + xs / width * 0.4, (height, width))
    elif kind == "dotted":
        weight = (((ys % unit) - unit / 2) ** 2 + ((xs % unit) - unit / 2) ** 2 < (unit / 5) ** 2).astype(
            np.float32
        )
    else:
        raise ValueError(f"unknown background {kind!r}; choose from {BACKGROUNDS}")
    tint_3 = np.asarray(tint, np.float32)
    other_3 = np.where(tint_3 > 127, tint_3 * 0.7, tint_3 * 1.6 + 40)
    frame = tint_3 + weight[..., None] * (other_3 - tint_3)
    return np.clip(frame, 0, 255).astype(np.uint8)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in shape coordinates (the shape fits the unit disc; ``v`` points down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "triangle":
        inside = np.ones(u.shape, bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(angle) - v * np.sin(angle) <= 0.5
        return inside
    if shape == "star":
        radius = np.hypot(u, v)
        angle = np.arctan2(-v, u) - np.pi / 2
        return radius <= 0.42 + 0.58 * np.abs(np.cos(2.5 * angle)) ** 4
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def motion_pose(motion: str, progress: float) -> tuple[float, float, float, float]:
    """(centre x, centre y as frame fractions, size factor, rotation in radians) at ``progress`` in [0, 1]."""
    x, y, size, angle = 0.5, 0.5, 1.0, 0.0
    if motion == "left":
        x = 0.75 - 0.5 * progress
    elif motion == "right":
        x = 0.25 + 0.5 * progress
    elif motion == "up":
        y = 0.75 - 0.5 * progress
    elif motion == "down":
        y = 0.25 + 0.5 * progress
    elif motion == "spin":
        angle = 3 * np.pi * progress
    elif motion == "grow":
        size = 0.45 + 0.85 * progress
    elif motion == "shrink":
        size = 1.3 - 0.85 * progress
    elif motion == "bounce":
        y = 0.72 - 0.4 * abs(np.sin(3 * np.pi * progress))
    else:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    return x, y, size, angle


class ShapeSprite:
    """A step's shape pre-drawn once on a ``(2S+1)^2`` grid (0 outside, 1 colour, 2 the darker band that
    makes spinning visible), sampled per frame by nearest neighbour instead of recomputing the shape."""

    def __init__(self, shape: str, half_size: int) -> None:
        grid = np.linspace(-1.0, 1.0, 2 * half_size + 1, dtype=np.float32)
        u, v = grid[None, :], grid[:, None]
        inside = shape_mask(shape, *np.broadcast_arrays(u, v))
        self.labels = np.zeros((grid.size + 2, grid.size + 2), np.uint8)  # zero border: clipped lookups miss
        self.labels[1:-1, 1:-1] = inside * np.where(u > 0.45, 2, 1).astype(np.uint8)
        self.half_size = half_size

    def lookup(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        last = self.labels.shape[0] - 1
        iu = np.clip(np.rint(u * self.half_size) + self.half_size + 1, 0, last).astype(np.intp)
        iv = np.clip(np.rint(v * self.half_size) + self.half_size + 1, 0, last).astype(np.intp)
        return self.labels[iv, iu]


BT601_RGB_TO_YUV = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255
)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV of ``(..., 3)`` RGB values, as uint8."""
    yuv = np.asarray(rgb, np.float64) @ BT601_RGB_TO_YUV.T + (16.0, 128.0, 128.0)
    return np.clip(np.rint(yuv), 0, 255).astype(np.uint8)


class I420Frame:
    """One frame's I420 buffer (``data``, what ffmpeg reads as ``-pix_fmt yuv420p``) with its plane views."""

    def __init__(self, data: np.ndarray, height: int, width: int) -> None:
        self.data = data
        num_luma = height * width
        self.y_HW = data[:num_luma].reshape(height, width)
        self.u_hw = data[num_luma : num_luma * 5 // 4].reshape(height // 2, width // 2)
        self.v_hw = data[num_luma * 5 // 4 :].reshape(height // 2, width // 2)

    @classmethod
    def from_rgb(cls, rgb_HW3: np.ndarray) -> I420Frame:
        height, width = rgb_HW3.shape[:2]
        frame = cls(np.empty(height * width * 3 // 2, np.uint8), height, width)
        frame.y_HW[:] = rgb_to_yuv(rgb_HW3)[..., 0]
        chroma = rgb_to_yuv(rgb_HW3.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3)))
        frame.u_hw[:], frame.v_hw[:] = chroma[..., 1], chroma[..., 2]
        return frame

    def copy(self) -> I420Frame:
        return I420Frame(self.data.copy(), *self.y_HW.shape)


def draw_shape(frame: I420Frame, scene: StepScene, sprite: ShapeSprite, progress: float) -> None:
    """Paint the step's shape into ``frame`` in place at its pose for ``progress`` in [0, 1]."""
    height, width = frame.y_HW.shape
    x, y, size, angle = motion_pose(scene.motion, progress)
    radius = SHAPE_RADIUS * min(height, width) * size
    cx, cy = x * width, y * height
    # An even-aligned box, so that every second row and column of it is the chroma plane's box.
    x0, x1 = max(0, int(cx - radius) - 1) & ~1, min(width, int(cx + radius) + 3) & ~1
    y0, y1 = max(0, int(cy - radius) - 1) & ~1, min(height, int(cy + radius) + 3) & ~1
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / radius
    dx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / radius
    if angle == 0.0:
        labels = sprite.lookup(dx, dy)  # separable: one gather, no per-pixel arithmetic
    else:
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        labels = sprite.lookup(dx * cos + dy * sin, dy * cos - dx * sin)
    colour, dark = rgb_to_yuv(COLOURS[scene.colour]), rgb_to_yuv(np.asarray(COLOURS[scene.colour]) * 0.55)
    chroma_labels = labels[::2, ::2]
    for label, yuv in ((1, colour), (2, dark)):
        frame.y_HW[y0:y1, x0:x1][labels == label] = yuv[0]
        frame.u_hw[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2][chroma_labels == label] = yuv[1]
        frame.v_hw[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2][chroma_labels == label] = yuv[2]


def iter_frames(
    scenes: list[StepScene], num_frames: int, fps: Fraction, height: int, width: int
) -> Iterator[I420Frame]:
    """Yield every frame of a video whose steps are ``scenes`` (frame i shows time i / fps); between two
    scenes that do not touch, the next scene's background alone."""
    backgrounds = [I420Frame.from_rgb(render_background(s.background, s.tint, height, width)) for s in scenes]
    max_size = max(motion_pose(s.motion, p)[2] for s in scenes for p in (0.0, 1.0))
    sprites = [
        ShapeSprite(s.shape, int(np.ceil(SHAPE_RADIUS * min(height, width) * max_size))) for s in scenes
    ]
    step = 0
    for i in range(num_frames):
        t = i * fps.denominator / fps.numerator
        while step + 1 < len(scenes) and t >= scenes[step].end:
            step += 1
        scene = scenes[step]
        frame = backgrounds[step].copy()
        if t >= scene.start:  # before it: a pause between two steps, background only
            progress = min(1.0, (t - scene.start) / (scene.end - scene.start))
            draw_shape(frame, scene, sprites[step], progress)
        yield frame


def encode_video(
    path: str | Path,
    frames: Iterator[I420Frame],
    size: tuple[int, int],
    fps: Fraction,
    profile: str,
    wav_path: str | Path | None,
    ffmpeg: str,
) -> None:
    """Pipe I420 frames (and the WAV, if any) through ffmpeg into ``path`` with a :data:`CODEC_PROFILES` entry.

    One encoder thread per file and bit-exact muxing, so the same frames give the same bytes.
    """
    width, height = size
    codec = CODEC_PROFILES[profile]
    cmd = [
        ffmpeg,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{width}x{height}",
    ]
    cmd += ["-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0"]
    if wav_path is not None:
        cmd += ["-i", str(wav_path), "-map", "0:v", "-map", "1:a", *codec.audio_args]
    cmd += [*codec.video_args, "-pix_fmt", "yuv420p", "-threads", "1"]
    cmd += ["-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1", str(path)]
    process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in frames:
            process.stdin.write(frame.data)
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its stderr says why
    finally:
        process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace")
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg could not encode {path}: {stderr.strip()[-500:]}")
