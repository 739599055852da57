"""Narration for the sample corpus: offline espeak-ng speech and the mixed soundtrack.

espeak-ng comes from the ``espeakng-loader`` wheel (the shared library and its data folder) and is driven
through ctypes in synchronous mode, so each sentence yields its samples and per-word timings. The library
carries hidden state from one sentence to the next (a few samples of drift), even across re-initialisation,
so each :class:`SpeechSynthesizer` loads a private copy of it: the same sentences in the same order then give
the same samples, whatever ran before in the process. Use one synthesizer from one thread.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcn.errors import MCNError
from mcn.sample.captions import Word

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


@dataclass
class Utterance:
    """One synthesised sentence: mono int16 samples and each word's (start_s, end_s, word)."""

    samples: np.ndarray
    sample_rate: int
    words: list[Word]

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class SpeechSynthesizer:
    """Text -> :class:`Utterance` with espeak-ng; loads the library once in ``__init__``."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise MCNError("the sample corpus needs espeak-ng: pip install 'mcn[sample]'") from error
        self._library_dir = tempfile.TemporaryDirectory(prefix="mcn-espeak-")
        private_copy = Path(self._library_dir.name) / "libespeak-ng.so"
        shutil.copyfile(espeakng_loader.get_library_path(), private_copy)
        self._lib = ctypes.CDLL(str(private_copy))
        self._libc = ctypes.CDLL(None)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = int(self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0))
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data_path.decode()}")
        self._chunks: list[np.ndarray] = []
        self._word_events: list[tuple[int, int]] = []  # (1-based text position, first sample)
        self._callback = _SynthCallback(self._collect)  # kept alive as long as the library may call it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_WORD:
                self._word_events.append((events[i].text_position, events[i].sample))
            i += 1
        return 0

    def __call__(self, text: str, voice: str = "en-us", words_per_minute: int = 170) -> Utterance:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MCNError(f"espeak-ng has no voice {voice!r}; try 'en-us' or 'en+m3'")
        self._lib.espeak_SetParameter(ESPEAK_RATE, int(words_per_minute), 0)
        self._chunks, self._word_events = [], []
        self._libc.srand(0)  # espeak-ng draws from libc's rand(), which the whole process shares
        data = text.encode()
        self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        duration = len(samples) / self.sample_rate
        # espeak reports no event for some short words ("the" before an adjective): interpolate those.
        event_times = {pos - 1: sample / self.sample_rate for pos, sample in self._word_events}
        offsets = [match.start() for match in re.finditer(r"\S+", text)]
        known = [k for k, offset in enumerate(offsets) if offset in event_times] or [0]
        times = [event_times.get(offsets[k], 0.0) for k in known]
        starts = np.interp(np.arange(len(offsets)), [*known, len(offsets)], [*times, duration]).tolist()
        ends = starts[1:] + [duration]
        return Utterance(samples, self.sample_rate, list(zip(starts, ends, text.split(), strict=True)))


def mix_soundtrack(
    utterances: list[tuple[float, Utterance]],
    duration: float,
    sample_rate: int,
    noise_level: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Place each (start_s, utterance) on a ``duration``-long track over soft brown noise and a faint hum."""
    num_samples = int(round(duration * sample_rate))
    walk = np.cumsum(rng.standard_normal(num_samples + 256))
    sums = np.cumsum(walk)
    noise = (walk[256:] - (sums[256:] - sums[:-256]) / 256).astype(np.float32)  # minus its moving mean
    noise *= noise_level / (np.abs(noise).max() + 1e-6)
    t = np.arange(num_samples, dtype=np.float32) / sample_rate
    track = noise + 0.3 * noise_level * np.sin(2 * np.pi * rng.uniform(90, 180) * t)
    for start, utterance in utterances:
        assert utterance.sample_rate == sample_rate
        first = int(round(start * sample_rate))
        piece = utterance.samples[: max(0, num_samples - first)].astype(np.float32) / 32768.0
        track[first : first + len(piece)] += 0.8 * piece
    return np.clip(track, -1.0, 1.0)


def write_wav(path: str | Path, track: np.ndarray, sample_rate: int) -> None:
    """16-bit mono WAV of a float track in [-1, 1]."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((track * 32767).astype("<i2").tobytes())
