"""probe (PyAV): the video stream's duration, cover art, frame counts without a header count, the timeout."""

from __future__ import annotations

import subprocess

import av
import pytest
from media import FFMPEG, make_video

from mcn.extract.decode import DecodeError, probe


def long_audio_video(path, video_seconds: float, audio_seconds: float):
    """A short test-pattern video with a much longer silent 8 kHz A-law track (no encoding cost)."""
    cmd = [FFMPEG, "-y", "-v", "error",
           "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25:duration={video_seconds}",
           "-f", "lavfi", "-t", str(audio_seconds), "-i", "anullsrc=r=8000:cl=mono",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "pcm_alaw", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_duration_is_the_video_streams(tmp_path, suffix):
    """Matroska records no per-stream duration (the end of the last packet counts); MOV does."""
    path = long_audio_video(tmp_path / f"v{suffix}", 3.0, 600.0)
    with av.open(str(path)) as container:
        assert container.duration / 1e6 == pytest.approx(600.0, abs=1)  # what the old probe recorded
    info = probe(path)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    assert info.num_frames == 75 and info.has_audio and info.audio_codec == "pcm_alaw"


def test_cover_art_is_not_the_video(tmp_path):
    video = make_video(tmp_path / "v.mp4", seconds=2.0, size=(64, 48))
    cover = tmp_path / "cover.png"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "color=red:size=32x32",
                    "-frames:v", "1", str(cover)], check=True)  # fmt: skip
    path = tmp_path / "with_cover.mp4"
    subprocess.run([FFMPEG, "-y", "-v", "error", "-i", str(cover), "-i", str(video), "-map", "0", "-map", "1",
                    "-c", "copy", "-disposition:v:0", "attached_pic", str(path)], check=True)  # fmt: skip
    info = probe(path)
    assert (info.video_codec, info.width, info.height, info.num_frames) == ("h264", 64, 48, 50)


def test_webm_without_header_counts(tmp_path):
    path = make_video(tmp_path / "v.webm", seconds=2.4, fps=30, size=(64, 48), codec="libvpx-vp9")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # nothing to read: the probe counts packets
    info = probe(path)
    assert info.num_frames == 72 and info.duration == pytest.approx(2.4, abs=0.04)


def test_a_stalled_read_is_a_timeout(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=1.0, size=(64, 48))
    with pytest.raises(DecodeError) as timed_out:
        probe(path, timeout_s=1e-9)
    assert timed_out.value.reason == "timeout"
