"""The inputs of one clip, cut from a video's stored features: the spec's recipe, shared by training and evaluation.

A clip is a time span ``[start, end]`` in seconds. From the store it gets

- video: 2D rows ``int(start*1.0) … int(end*1.0)`` and 3D rows ``int(start*1.5) … int(end*1.5)`` (inclusive),
  each max-pooled over time and L2-normalised, concatenated 2D‖3D (an empty slice gives zeros);
- audio: log-mel frames ``logmel[:, f(start):f(end)]`` with ``f(t) = floor((int(16000 t) - 200) / 160)``
  (librosa's ``time_to_frames`` with hop 160 and n_fft 400), truncated or zero-padded to ``max_frames``;
- text: the first ``max_words`` token ids of the clip's caption(s), looked up in the store's word table.

Training clips are drawn per video: ``n_pair`` caption indices uniformly with replacement, each grown by
:func:`merge_captions` until it spans ``min_time`` seconds (:func:`sample_video_clips`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mcn.errors import MCNError
from mcn.store import VideoRecord, WordTable

RATE_2D_HZ = 1.0
RATE_3D_HZ = 24.0 / 16.0
AUDIO_SAMPLE_RATE = 16000
AUDIO_HOP = 160
AUDIO_HALF_WINDOW = 200  # n_fft // 2: librosa centres frames
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps
TORCH_GRAIN = 32768  # at::internal::GRAIN_SIZE: smaller tensor ops run on the calling thread


def _pooled_rows(feats_TD: np.ndarray, first: int, last: int) -> np.ndarray:
    """Rows ``first … last`` (inclusive) max-pooled over time and L2-normalised; zeros for an empty slice."""
    rows_TD = feats_TD[first : last + 1]
    if len(rows_TD) == 0:
        return np.zeros(feats_TD.shape[1], np.float32)
    pooled_D = rows_TD.astype(np.float32, copy=False).max(axis=0)  # numpy's float16 reductions are slow
    return pooled_D / max(float(np.sqrt(np.dot(pooled_D, pooled_D))), NORM_EPS)


def pool_video(feat_2d_TD: np.ndarray, feat_3d_TD: np.ndarray, start: float, end: float) -> np.ndarray:
    """The clip's video vector (D2 + D3,) float32, 4096 for the real features."""
    pooled_2d = _pooled_rows(feat_2d_TD, int(start * RATE_2D_HZ), int(end * RATE_2D_HZ))
    pooled_3d = _pooled_rows(feat_3d_TD, int(start * RATE_3D_HZ), int(end * RATE_3D_HZ))
    return np.concatenate([pooled_2d, pooled_3d])


def audio_frame(seconds: float) -> int:
    """Index of the log-mel frame at ``seconds`` (librosa ``time_to_frames``, sr 16000, hop 160, n_fft 400)."""
    samples = int(seconds * AUDIO_SAMPLE_RATE)
    return (samples - AUDIO_HALF_WINDOW) // AUDIO_HOP


def _audio_frames(
    logmel_FT: np.ndarray, start: float, end: float, max_frames: int, clamp_start: bool
) -> np.ndarray:
    """The clip's frames as a view of ``logmel`` (at most ``max_frames``)."""
    first, last = audio_frame(start), audio_frame(end)
    if clamp_start:
        first, last = max(first, 0), max(last, 0)
    return logmel_FT[:, first:last][:, :max_frames]


def audio_window(
    logmel_FT: np.ndarray, start: float, end: float, max_frames: int, clamp_start: bool = True
) -> tuple[np.ndarray, int]:
    """The clip's log-mel frames, zero-padded or truncated to ``(F, max_frames)`` float32, and the unpadded length.

    ``clamp_start=False`` reproduces the reference, which slices with a negative start for clips starting
    before 12.5 ms (Python then counts from the end of the recording, usually giving an empty window).
    """
    window_FT = _audio_frames(logmel_FT, start, end, max_frames, clamp_start)
    out_FT = np.zeros((logmel_FT.shape[0], max_frames), np.float32)
    out_FT[:, : window_FT.shape[1]] = window_FT
    return out_FT, int(window_FT.shape[1])


def text_tokens(token_ids: Sequence[int] | np.ndarray, max_words: int = 20) -> np.ndarray:
    """The first ``max_words`` token ids (int32, unpadded); the store has already dropped out-of-vocabulary words."""
    return np.asarray(token_ids, np.int32).reshape(-1)[:max_words]


def text_vectors(token_ids: Sequence[int] | np.ndarray, words: WordTable, max_words: int = 20) -> np.ndarray:
    """Word vectors of the first ``max_words`` ids, zero-padded to ``(max_words, W)`` float32 (no words: zeros)."""
    ids = text_tokens(token_ids, max_words)
    out_LW = np.zeros((max_words, words.dim), np.float32)
    if len(ids):
        out_LW[: len(ids)] = words.lookup(ids)
    return out_LW


def merge_captions(
    starts: Sequence[float] | np.ndarray,
    ends: Sequence[float] | np.ndarray,
    index: int,
    min_time: float = 10.0,
) -> tuple[float, float, list[int]]:
    """Grow caption ``index`` with its neighbours until it spans ``min_time`` seconds.

    Each round merges the neighbour whose merge gives the shorter span (the previous one on ties, the only
    one at an edge). Returns ``(start, end, indices)``, the indices in the order their words are appended:
    the drawn caption first, then each merged one, even when it precedes.
    """
    num_captions = len(starts)
    if not 0 <= index < num_captions:
        raise IndexError(f"caption index {index} out of range for {num_captions} captions")
    first = last = index
    order = [index]
    while ends[last] - starts[first] < min_time:
        has_prev, has_next = first > 0, last < num_captions - 1
        if has_prev and has_next:
            span_with_next = ends[last + 1] - starts[first]
            span_with_prev = ends[last] - starts[first - 1]
            take_prev = span_with_prev <= span_with_next
        elif has_prev or has_next:
            take_prev = has_prev
        else:
            break
        if take_prev:
            first -= 1
            order.append(first)
        else:
            last += 1
            order.append(last)
    return float(starts[first]), float(ends[last]), order


@dataclass(frozen=True, kw_only=True)
class ClipOptions:
    """How clips are cut (the spec's training values)."""

    num_clips: int = 32  # n_pair: clips drawn per video
    min_time: float = 10.0
    max_frames: int = 1000
    max_words: int = 20
    clamp_audio_start: bool = True

    def __post_init__(self) -> None:
        for name in ("num_clips", "max_frames", "max_words"):
            if getattr(self, name) < 1:
                raise MCNError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_time < 0:
            raise MCNError(f"data.min_time must be >= 0 seconds, got {self.min_time}")


def clip_inputs(
    record: VideoRecord,
    start: float,
    end: float,
    token_ids: Sequence[int] | np.ndarray,
    words: WordTable,
    options: ClipOptions,
) -> dict[str, np.ndarray | int]:
    """One clip's model inputs: "video" (4096,), "audio" (40, max_frames), "nframes" int, "text" (max_words, W)."""
    assert record.feat_2d is not None and record.feat_3d is not None and record.logmel is not None
    audio_FT, num_frames = audio_window(
        record.logmel, start, end, options.max_frames, options.clamp_audio_start
    )
    return {
        "video": pool_video(record.feat_2d, record.feat_3d, start, end),
        "audio": audio_FT,
        "nframes": num_frames,
        "text": text_vectors(token_ids, words, options.max_words),
    }


def sample_video_clips(
    record: VideoRecord, words: WordTable, options: ClipOptions, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A training item: ``num_clips`` clips of one video (C = num_clips).

    Returns "video" (C, 4096) float32, "audio" (C, 40, max_frames) float16 (the store's precision),
    "nframes" (C,) int64, "text" (C, max_words, W) float32, "start"/"end" (C,) float64 seconds. Each clip is
    exactly what :func:`clip_inputs` gives for its span; the work is shared across clips (one float32
    conversion per feature, one word-table lookup).
    """
    assert record.caption_start is not None and record.caption_end is not None
    assert record.caption_token_ids is not None and record.num_captions > 0
    assert record.feat_2d is not None and record.feat_3d is not None and record.logmel is not None
    starts, ends = record.caption_start.astype(np.float64), record.caption_end.astype(np.float64)
    drawn = rng.choice(record.num_captions, size=options.num_clips, replace=True)
    C, L = options.num_clips, options.max_words
    spans = [merge_captions(starts, ends, int(index), options.min_time) for index in drawn]
    out = {
        "video": np.concatenate(
            [
                _pooled_clips(record.feat_2d, spans, RATE_2D_HZ),
                _pooled_clips(record.feat_3d, spans, RATE_3D_HZ),
            ],
            axis=1,
        ),
        "audio": np.zeros((C, record.logmel.shape[0], options.max_frames), np.float16),
        "nframes": np.zeros(C, np.int64),
        "text": np.zeros((C, L, words.dim), np.float32),
        "start": np.array([start for start, _, _ in spans], np.float64),
        "end": np.array([end for _, end, _ in spans], np.float64),
    }
    for clip, (start, end, _) in enumerate(spans):
        window_FT = _audio_frames(record.logmel, start, end, options.max_frames, options.clamp_audio_start)
        out["audio"][clip, :, : window_FT.shape[1]] = window_FT  # float16 to float16: no conversion
        out["nframes"][clip] = window_FT.shape[1]
    clip_ids = [
        text_tokens(np.concatenate([record.caption_token_ids[i] for i in merged]), L)
        for _, _, merged in spans
    ]
    lengths = np.array([len(ids) for ids in clip_ids])
    if lengths.sum():
        rows = np.repeat(np.arange(C), lengths)
        positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out["text"][rows, positions] = words.lookup(np.concatenate(clip_ids))
    return out


def _pooled_clips(
    feats_TD: np.ndarray, spans: list[tuple[float, float, list[int]]], rate: float
) -> np.ndarray:
    """:func:`_pooled_rows` of every clip span, (C, D) float32, converting the features to float32 once."""
    feats_f32_TD = _as_float32(feats_TD)
    pooled_CD = np.zeros((len(spans), feats_TD.shape[1]), np.float32)
    for clip, (start, end, _) in enumerate(spans):
        pooled_CD[clip] = _pooled_rows(feats_f32_TD, int(start * rate), int(end * rate))
    return pooled_CD


def _as_float32(array_TD: np.ndarray) -> np.ndarray:
    """``array_TD.astype(np.float32)``, exactly, through torch: numpy's float16 conversion is ~4x slower.

    The copy goes in blocks below torch's parallel grain (32,768 elements), so that it stays on the calling
    thread instead of waking torch's thread pool for a millisecond of work.
    """
    if array_TD.dtype == np.float32:
        return array_TD
    out_TD = np.empty(array_TD.shape, np.float32)
    rows = max(1, TORCH_GRAIN // max(1, array_TD.shape[1]))
    with warnings.catch_warnings():  # store arrays are read-only views; torch only reads this one
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        source, target = torch.from_numpy(np.ascontiguousarray(array_TD)), torch.from_numpy(out_TD)
    for first in range(0, len(array_TD), rows):
        target[first : first + rows].copy_(source[first : first + rows])
    return out_TD
