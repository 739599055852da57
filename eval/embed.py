"""Model inputs for evaluation clips and their embeddings (library: no file I/O).

Shapes: N clips, D embedding size, L words, W word-vector size, F mel bins, T seconds, K steps.

Retrieval clips follow the training recipe of :mod:`mcn.train.clips` (max-pooled 2D‖3D over the span, log-mel
window of the span) with the audio length of the benchmark's settings (5,120 frames on YouCook2, 3,072 on
MSR-VTT), and the audio embedding is pooled over the valid frames only (the model in ``eval()`` mode). Short
windows are padded with 0 dB as the reference (the loudest level of a log-mel scaled to its maximum), or with
the clip's lowest level (``padding="floor"``). Localisation uses one
row per second: 2D and 3D features adaptively max-pooled to T rows, each L2-normalised, concatenated; audio
from an 8 s window centred on the second, clamped to the video, padded to 1,024 frames (the reference's
``cvpr19_dataloader``). Benchmark text is tokenised as in training and looked up in the store's word table,
falling back to a word2vec file for words the store has never seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mcn.errors import MCNError
from mcn.extract.text import tokenize
from mcn.store import VideoRecord, WordTable
from mcn.train.clips import audio_window, pool_video

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

    from mcn.train.model import MCNModel

LOCALIZATION_WINDOW_S = 8.0
LOCALIZATION_AUDIO_FRAMES = 1024
STEP_MAX_WORDS = 30
CAPTION_MAX_WORDS = 20


class TextVectorizer:
    """Benchmark text -> zero-padded (L, W) word vectors: the store's table first, then an optional word2vec file.

    A word found in neither is dropped, as the reference drops words outside its word2vec table; the job checks
    beforehand (:meth:`unknown_words`) that such words are not merely missing because no file was given.
    """

    def __init__(self, words: WordTable, fallback: KeyedVectors | None = None) -> None:
        table_dim = words.dim if len(words.words) else None
        if fallback is not None and table_dim is not None and fallback.vector_size != table_dim:
            raise MCNError(
                f"the word-vector file has {fallback.vector_size}-d vectors but the store uses {table_dim}-d: "
                "pass the file the store was extracted with"
            )
        if table_dim is None and fallback is None:
            raise MCNError(
                "the store has no word table: give a word-vector file (--word-vectors) for the texts"
            )
        self.dim = table_dim if table_dim is not None else fallback.vector_size
        self._rows = {word: row for row, word in enumerate(words.words)}
        self._vectors_UW = words.vectors_UW
        self.fallback = fallback

    def vector(self, word: str) -> np.ndarray | None:
        row = self._rows.get(word)
        if row is not None:
            return self._vectors_UW[row]
        if self.fallback is not None and word in self.fallback.key_to_index:
            return np.asarray(self.fallback[word], np.float32)
        return None

    def unknown_words(self, texts: Iterable[str]) -> tuple[int, Counter]:
        """The number of tokens of ``texts`` and how often each token without a vector occurs."""
        num_tokens, unknown = 0, Counter()
        for text in texts:
            for token in tokenize(text):
                num_tokens += 1
                if self.vector(token) is None:
                    unknown[token] += 1
        return num_tokens, unknown

    def __call__(self, text: str, max_words: int = CAPTION_MAX_WORDS) -> np.ndarray:
        """Tokens as in training (case kept), unknown words dropped, the first ``max_words`` kept."""
        out_LW = np.zeros((max_words, self.dim), np.float32)
        kept = 0
        for token in tokenize(text):
            vector = self.vector(token)
            if vector is not None and kept < max_words:
                out_LW[kept] = vector
                kept += 1
        return out_LW


def pad_audio(audio_FT: np.ndarray, num_frames: int, padding: str, logmel_FT: np.ndarray) -> np.ndarray:
    """Fill the padded frames (from ``num_frames`` on): ``zero_db`` leaves the zeros (0 dB, the recording's
    loudest level, as the reference pads), ``floor`` puts the clip's lowest level there (silence)."""
    if padding == "zero_db" or num_frames >= audio_FT.shape[1]:
        return audio_FT
    if padding != "floor":
        raise MCNError(f"unknown log-mel padding {padding!r}; use 'zero_db' or 'floor'")
    source = audio_FT[:, :num_frames] if num_frames else logmel_FT
    if source.size:
        audio_FT[:, num_frames:] = float(source.min())
    return audio_FT


def clip_inputs(
    record: VideoRecord, start: float, end: float, max_audio_frames: int, padding: str = "zero_db"
) -> dict:
    """A retrieval clip's "video" (4096,), "audio" (F, max_audio_frames) and "nframes"; no audio gives zeros."""
    assert record.feat_2d is not None and record.feat_3d is not None and record.logmel is not None
    audio_FT, num_frames = audio_window(record.logmel, start, end, max_audio_frames)
    audio_FT = pad_audio(audio_FT, num_frames, padding, record.logmel)
    return {
        "video": pool_video(record.feat_2d, record.feat_3d, start, end),
        "audio": audio_FT,
        "nframes": num_frames,
    }


def num_seconds(record: VideoRecord) -> int:
    """Length of the localisation time axis: one row per 2D feature (1 per second), else the rounded-up duration."""
    assert record.feat_2d is not None
    return len(record.feat_2d) if len(record.feat_2d) else int(np.ceil(record.duration))


def per_second_video(record: VideoRecord, seconds: int) -> np.ndarray:
    """(T, D2 + D3) float32: 2D and 3D features each adaptively max-pooled to T rows and L2-normalised."""
    parts = []
    for feats_TD in (record.feat_2d, record.feat_3d):
        assert feats_TD is not None
        if len(feats_TD) == 0:
            parts.append(torch.zeros(seconds, feats_TD.shape[1]))
            continue
        rows_DT = torch.from_numpy(np.asarray(feats_TD, np.float32)).T[None]
        pooled_TD = F.adaptive_max_pool1d(rows_DT, seconds)[0].T
        parts.append(F.normalize(pooled_TD, dim=1))
    return torch.cat(parts, dim=1).numpy()


def per_second_windows(seconds: int, window_s: float = LOCALIZATION_WINDOW_S) -> list[tuple[float, float]]:
    """The reference's audio window of each second: ``[t - 4, t + 4]`` shifted inside ``[0, T]``."""
    half = int(window_s // 2)
    windows = []
    for t in range(seconds):
        if t < half:
            windows.append((0.0, 2.0 * half))
        elif t > seconds - half:
            windows.append((float(seconds - 2 * half), float(seconds)))
        else:
            windows.append((float(t - half), float(t + half)))
    return windows


def per_second_inputs(
    record: VideoRecord,
    window_s: float = LOCALIZATION_WINDOW_S,
    max_audio_frames: int = LOCALIZATION_AUDIO_FRAMES,
    padding: str = "zero_db",
) -> Iterator[dict]:
    """One input dict per second ("video", "audio", "nframes"), for :func:`embed_stream`."""
    assert record.logmel is not None
    seconds = num_seconds(record)
    video_TV = per_second_video(record, seconds)
    for t, (start, end) in enumerate(per_second_windows(seconds, window_s)):
        audio_FT, num_frames = audio_window(record.logmel, start, end, max_audio_frames)
        audio_FT = pad_audio(audio_FT, num_frames, padding, record.logmel)
        yield {"video": video_TV[t], "audio": audio_FT, "nframes": num_frames}


def _encode(model: MCNModel, batch: dict[str, list], device: torch.device) -> dict[str, np.ndarray]:
    out = {}
    if "video" in batch:
        out["video"] = model.encode_video(torch.from_numpy(np.stack(batch["video"])).to(device))
    if "audio" in batch:
        audio = torch.from_numpy(np.stack(batch["audio"]).astype(np.float32)).to(device)
        out["audio"] = model.encode_audio(audio, torch.as_tensor(batch["nframes"], device=device))
    if "text" in batch:
        out["text"] = model.encode_text(torch.from_numpy(np.stack(batch["text"])).to(device))
    return {name: value.float().cpu().numpy() for name, value in out.items()}


@torch.no_grad()
def embed_stream(
    model: MCNModel, items: Iterable[dict], batch_size: int = 64, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """Embed a stream of input dicts (any of "video", "audio"+"nframes", "text") in batches.

    Returns each present modality as (N, D) float32 in stream order. Only one batch of inputs is held at a
    time, so long audio windows (e.g. 3,350 × 40 × 5,120) never sit in memory together. The model is put in
    ``eval()`` mode (audio pooled over valid frames only).
    """
    model.eval()
    device = torch.device(device)
    chunks: dict[str, list[np.ndarray]] = {}
    batch: dict[str, list] = {}
    num_in_batch = 0

    def flush() -> None:
        for name, value in _encode(model, batch, device).items():
            chunks.setdefault(name, []).append(value)
        batch.clear()

    for item in items:
        for name, value in item.items():
            batch.setdefault(name, []).append(value)
        num_in_batch += 1
        if num_in_batch == batch_size:
            flush()
            num_in_batch = 0
    if num_in_batch:
        flush()
    return {name: np.concatenate(values) for name, values in chunks.items()}


def step_scores(frames_TD: np.ndarray, steps_KD: np.ndarray) -> np.ndarray:
    """Raw dot products of per-second embeddings with step embeddings, (T, K)."""
    return np.asarray(frames_TD, np.float32) @ np.asarray(steps_KD, np.float32).T
