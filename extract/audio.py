"""40-bin log-mel spectrogram of a 16 kHz waveform, 100 frames per second, as the released features were made.

The recipe (the spec's, after AVLnet's ``audio_to_spectrograms.py``): a -4 dB gain, DC removal,
pre-emphasis 0.97 keeping the first sample, an empty track replaced by 200 zeros, a centred STFT with
n_fft = win = 400 (25 ms) and hop 160 (10 ms) under a symmetric Hamming window, power ``|X|^2``, librosa's
mel filterbank (40 mels, 20 Hz to 8 kHz, Slaney scale and norm), then dB relative to the file's maximum with
an 80 dB floor. The STFT pads the edges by reflection, as librosa did before 0.10 (when the reference
features were made); librosa >= 0.10 pads with zeros unless asked.

:func:`log_mel` computes it from the whole waveform. :func:`log_mel_streamed` computes the same from chunks
of it, in memory that grows only with the result, given the two whole-track numbers the recipe needs up front:
the number of samples and their mean (the DC to remove). The dB reference (the maximum) is applied at the end,
to dB values kept in float32 (4 bytes per value besides the float16 result, about 86 MB for an hour of audio in
all, where the whole-track computation peaks at about 1.6 GB). Each step runs in the same float32 arithmetic as
the whole-track path, so the results agree within float rounding (the mean is summed in float64 there, and the
FFT and matrix products run on other batch sizes).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable

import librosa
import numpy as np
import scipy.signal

SAMPLE_RATE = 16000
GAIN = 10 ** (-4 / 20)
PREEMPHASIS = 0.97
N_FFT = 400
HOP_LENGTH = 160
NUM_MELS = 40
FMIN = 20.0
FMAX = 8000.0
TOP_DB = 80.0
AMIN = 1e-10  # power_to_db's floor
EMPTY_TRACK_SAMPLES = 200
CHUNK_FRAMES = 1000  # STFT frames per step of the streaming path: 10 s, a few MB of float64 work arrays


@functools.cache
def mel_filterbank() -> np.ndarray:
    """(40, 201) float32 librosa mel filterbank for 16 kHz, n_fft 400, 20 Hz to 8 kHz."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)


def log_mel(waveform_16k: np.ndarray) -> np.ndarray:
    """(40, T) float32 log-mel spectrogram of a mono 16 kHz waveform, T = 1 + len(waveform) // 160."""
    signal = np.asarray(waveform_16k, dtype=np.float32).reshape(-1) * np.float32(GAIN)
    if signal.size == 0:
        signal = np.zeros(EMPTY_TRACK_SAMPLES, dtype=np.float32)
    signal = signal - signal.mean()
    signal = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1])
    with warnings.catch_warnings():  # a track shorter than n_fft (e.g. the 200-zero empty track) is expected
        warnings.filterwarnings("ignore", message="n_fft=.* is too large")
        spectrum = librosa.stft(
            signal,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=scipy.signal.windows.hamming,
            center=True,
            pad_mode="reflect",
        )
    power_FT = np.abs(spectrum) ** 2
    mel_FT = mel_filterbank() @ power_FT
    return librosa.power_to_db(mel_FT, ref=np.max, top_db=TOP_DB).astype(np.float32)


def log_mel_streamed(chunks: Iterable[np.ndarray], num_samples: int, mean: float) -> np.ndarray:
    """(40, T) float16 :func:`log_mel` of the waveform whose consecutive pieces ``chunks`` yields.

    ``num_samples`` is the waveform's length and ``mean`` the mean of its samples; the waveform must be longer
    than ``n_fft`` (shorter ones go through :func:`log_mel`).
    """
    assert num_samples > N_FFT, num_samples
    dc = np.float32(mean * GAIN)
    num_frames = 1 + num_samples // HOP_LENGTH
    half = N_FFT // 2
    padded = np.zeros(0, np.float32)  # the reflect-padded, pre-emphasised track from frame `done` on
    previous = None  # the last DC-free sample, for the pre-emphasis across chunks
    started, done, seen = False, 0, 0
    db_parts: list[np.ndarray] = []
    for chunk in chunks:
        signal = np.asarray(chunk, dtype=np.float32).reshape(-1) * np.float32(GAIN) - dc
        if len(signal) == 0:
            continue
        emphasised = np.empty_like(signal)
        emphasised[1:] = signal[1:] - PREEMPHASIS * signal[:-1]
        emphasised[0] = signal[0] if previous is None else signal[0] - PREEMPHASIS * previous
        previous, seen = signal[-1], seen + len(signal)
        padded = np.concatenate([padded, emphasised])
        if not started:
            if len(padded) <= half:
                continue  # the start's reflection needs samples 1 to n_fft / 2
            padded, started = np.concatenate([padded[1 : half + 1][::-1], padded]), True
        # the frames inside what has arrived, keeping the last n_fft / 2 + 1 samples for the end's reflection
        ready = (len(padded) - N_FFT - (half + 1)) // HOP_LENGTH + 1
        if ready > 0:
            db_parts.append(_db_frames(padded, ready))
            padded = padded[ready * HOP_LENGTH :]
            done += ready
    assert seen == num_samples, (seen, num_samples)
    padded = np.concatenate([padded, padded[-(half + 1) : -1][::-1]])
    db_parts.append(_db_frames(padded, num_frames - done))
    reference = np.float32(max(float(part.max()) for part in db_parts if part.size))  # the track's maximum
    floor = np.float32(-TOP_DB)  # power_to_db's: the maximum after the shift (0 dB), less 80 dB
    result = np.empty((NUM_MELS, num_frames), np.float16)
    column = 0
    while db_parts:
        db = db_parts.pop(0)
        result[:, column : column + db.shape[1]] = np.maximum(db - reference, floor)
        column += db.shape[1]
    return result


def _db_frames(padded: np.ndarray, count: int) -> np.ndarray:
    """(40, count) float32 ``10 log10(mel power)`` of the first ``count`` frames of the padded track.

    The arithmetic of :func:`log_mel`: float32 frames times the float64 window, a float64 FFT stored as
    complex64 (librosa's STFT), float32 power and mel products.
    """
    window = _window()
    starts = np.arange(count) * HOP_LENGTH
    out = np.empty((NUM_MELS, count), np.float32)
    for first in range(0, count, CHUNK_FRAMES):
        frames_TN = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[
            starts[first : first + CHUNK_FRAMES]
        ]
        spectrum_FT = np.fft.rfft(window[:, None] * frames_TN.T, axis=0).astype(np.complex64)
        mel_FT = mel_filterbank() @ (np.abs(spectrum_FT) ** 2)
        out[:, first : first + CHUNK_FRAMES] = 10.0 * np.log10(np.maximum(AMIN, mel_FT))
    return out


@functools.cache
def _window() -> np.ndarray:
    return scipy.signal.windows.hamming(N_FFT, sym=True)
