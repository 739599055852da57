"""Narration for the sample corpus: offline espeak-ng speech, the mixed soundtrack, and caption files.

espeak-ng comes from the ``espeakng-loader`` wheel (the shared library and its data folder) and is driven
through ctypes in synchronous mode, so each sentence yields its samples and per-word timings. The library
carries hidden state from one sentence to the next (a few samples of drift), even across re-initialisation,
so each :class:`SpeechSynthesizer` loads a private copy of it: the same sentences in the same order then give
the same samples, whatever ran before in the process. Use one synthesizer from one thread.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import re
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1

Word = tuple[
    float, float, str
]  # one spoken word: (start_s, end_s, word); caption writers take lists of sentences


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
            raise ImportError("the sample corpus needs espeak-ng: pip install 'mcn[sample]'") from error
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
            raise ValueError(f"espeak-ng has no voice {voice!r}; try 'en-us' or 'en+m3'")
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


def _timestamp(seconds: float, decimal: str = ".") -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def caption_lines(sentences: list[list[Word]], max_words: int = 6) -> list[list[Word]]:
    """Split each sentence's timed words into display lines of at most ``max_words`` words."""
    lines = []
    for words in sentences:
        num_lines = -(-len(words) // max_words)
        per_line = -(-len(words) // num_lines)
        lines += [words[i : i + per_line] for i in range(0, len(words), per_line)]
    return lines


def youtube_vtt(lines: list[list[Word]], hold: float = 1.0) -> str:
    """WebVTT as YouTube's automatic captions write it: every line is shown twice, first being spoken
    (word-timed ``<c>`` tags, under the previous line) and then as the top line of the next cue, with a 10 ms
    cue between them that holds the finished line alone."""
    out = ["WEBVTT", "Kind: captions", "Language: en", ""]
    previous = " "
    for i, line in enumerate(lines):
        start, end = line[0][0], line[-1][1] + hold
        if i + 1 < len(lines):
            end = min(end, lines[i + 1][0][0] - 0.01)
        spoken = line[0][2] + "".join(f"<{_timestamp(s)}><c> {w}</c>" for s, _, w in line[1:])
        out += [f"{_timestamp(start)} --> {_timestamp(end)} align:start position:0%", previous, spoken, ""]
        previous = " ".join(w for _, _, w in line)
        out += [f"{_timestamp(end)} --> {_timestamp(end + 0.01)} align:start position:0%", previous, " ", ""]
    return "\n".join(out)


def srt(sentences: list[list[Word]]) -> str:
    blocks = [
        f"{i}\n{_timestamp(words[0][0], ',')} --> {_timestamp(words[-1][1], ',')}\n{' '.join(w for _, _, w in words)}\n"
        for i, words in enumerate(sentences, start=1)
    ]
    return "\n".join(blocks)


def _rows(sentences: list[list[Word]]) -> list[tuple[float, float, str]]:
    return [(round(s[0][0], 3), round(s[-1][1], 3), " ".join(w for _, _, w in s)) for s in sentences]


def howto100m_csv(sentences: list[list[Word]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["start", "end", "text"])
    writer.writerows(_rows(sentences))
    return buffer.getvalue()


def howto100m_json(sentences: list[list[Word]]) -> str:
    rows = _rows(sentences)
    return json.dumps(
        {"start": [r[0] for r in rows], "end": [r[1] for r in rows], "text": [r[2] for r in rows]}
    )


CAPTION_WRITERS = {
    "vtt": lambda s: youtube_vtt(caption_lines(s)),
    "srt": srt,
    "csv": howto100m_csv,
    "json": howto100m_json,
}


def broken_captions(fmt: str, sentences: list[list[Word]]) -> str:
    """A caption file of format ``fmt`` damaged the way real downloads are (no parser can read it)."""
    text = CAPTION_WRITERS[fmt](sentences)
    if fmt == "vtt":  # header lost and timestamps mangled
        return text.replace("WEBVTT\n", "").replace(":", ";").replace(" --> ", " -> ")
    if fmt == "srt":  # the timing lines are garbage
        return text.replace(" --> ", " ~~ ").replace(",", "#")
    if fmt == "csv":  # a foreign header and non-numeric times
        return "begin|finish|caption\n" + text.split("\n", 1)[1].replace(",", "|").replace(".", "h")
    return text[: len(text) // 2]  # json cut off mid-file
