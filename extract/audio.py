"""40-bin log-mel spectrogram of a 16 kHz waveform, 100 frames per second, as the released features were made.

The recipe (the spec's, after AVLnet's ``audio_to_spectrograms.py``): a -4 dB gain, DC removal,
pre-emphasis 0.97 keeping the first sample, an empty track replaced by 200 zeros, a centred STFT with
n_fft = win = 400 (25 ms) and hop 160 (10 ms) under a symmetric Hamming window, power ``|X|^2``, librosa's
mel filterbank (40 mels, 20 Hz to 8 kHz, Slaney scale and norm), then dB relative to the file's maximum with
an 80 dB floor. The STFT pads the edges by reflection, as librosa did before 0.10 (when the reference
features were made); librosa >= 0.10 pads with zeros unless asked.
"""

from __future__ import annotations

import functools
import warnings

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
EMPTY_TRACK_SAMPLES = 200


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
