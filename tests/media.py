"""Tiny real media for tests, made with the ffmpeg binary that imageio-ffmpeg ships."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_video(
    path: str | Path,
    seconds: float = 3.0,
    fps: float | str = 25,
    size: tuple[int, int] = (160, 120),
    audio: bool = True,
    codec: str = "libx264",
    pattern: str = "testsrc2",
    audio_hz: int = 440,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Write a synthetic video (moving test pattern, optional sine tone) and return its path.

    ``fps`` may be a fraction such as ``"30000/1001"``; ``codec`` e.g. libx264, libvpx-vp9, libvpx, mpeg4.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    cmd = [
        FFMPEG,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"{pattern}=size={width}x{height}:rate={fps}:duration={seconds}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={audio_hz}:sample_rate=44100:duration={seconds}"]
    cmd += ["-c:v", codec, "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast"]
    if audio:
        cmd += ["-c:a", "libopus" if path.suffix == ".webm" else "aac", "-shortest"]
    cmd += [*extra_args, str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def make_vfr_video(path: str | Path, seconds: float = 4.0, size: tuple[int, int] = (160, 120)) -> Path:
    """A variable-frame-rate MP4: 30 fps for the first half, 10 fps for the second (no audio).

    testsrc2 draws a moving pattern, so frames at different times differ.
    """
    path = Path(path)
    width, height = size
    half = seconds / 2
    graph = (
        f"testsrc2=size={width}x{height}:rate=30:duration={half}[a];"
        f"testsrc2=size={width}x{height}:rate=10:duration={half}[b];"
        "[a][b]concat=n=2:v=1:a=0[v]"
    )
    cmd = [
        FFMPEG,
        "-y",
        "-loglevel",
        "error",
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-fps_mode",
        "vfr",
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def make_counter_video(
    path: str | Path, segments: tuple[tuple[float | str, float], ...], size: tuple[int, int] = (64, 48)
) -> Path:
    """A lossless H.264 MP4 of flat grey frames whose luma encodes the frame number: Y = 16 + 4 * (N mod 50).

    ``segments`` are (fps, seconds) pairs played one after the other, so more than one makes a
    variable-frame-rate file. :func:`counter_of` reads N mod 50 back (steps of 4 survive scaling and RGB conversion).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    sources = "".join(
        f"color=c=black:size={width}x{height}:rate={fps}:duration={seconds}[s{i}];"
        for i, (fps, seconds) in enumerate(segments)
    )
    joined = "".join(f"[s{i}]" for i in range(len(segments)))
    graph = f"{sources}{joined}concat=n={len(segments)}:v=1:a=0,format=yuv420p,geq=lum='16+4*mod(N,50)':cb=128:cr=128[v]"
    cmd = [
        FFMPEG,
        "-y",
        "-loglevel",
        "error",
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-fps_mode",
        "vfr",
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def counter_of(frames_THWC) -> list[int]:
    """The frame numbers mod 50 that :func:`make_counter_video` wrote into these RGB frames."""
    return [round(float(frame.mean()) * 219 / 255 / 4) % 50 for frame in frames_THWC]


def hanging_decoder(path, info, config):
    """A frame source that never yields (stands in for a decoder spinning on a broken file).

    It writes its process id next to ``path`` (``.pid``) so a test can check that it was killed.
    """
    import os
    import time

    Path(path).with_suffix(".pid").write_text(str(os.getpid()))
    time.sleep(600)
    yield


def with_display_rotation(source: str | Path, path: str | Path, degrees: int) -> Path:
    """A stream copy of ``source`` whose container says to display it rotated by ``degrees``."""
    cmd = [FFMPEG, "-y", "-v", "error", "-display_rotation", str(degrees), "-i", str(source), "-c", "copy",
           str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return Path(path)


def decode_all(path: str | Path, config, **options):
    """Every 2D and 3D frame the decoder gives for ``path`` under ``config``, each stream as one THWC array."""
    import numpy as np

    from mcn.extract.decode import iter_frame_windows, probe

    windows = list(iter_frame_windows(path, probe(path), config, **options))
    return (
        np.concatenate([w.frames_2d_THWC for w in windows]),
        np.concatenate([w.frames_3d_THWC for w in windows]),
    )
