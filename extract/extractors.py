"""Feature extractors: each loads once in ``__init__`` and maps a batch of per-video inputs in ``__call__``.

A batch is a list of items (one per video or window); the result is a :class:`BatchOutput` with one output
per item and the failures recorded by item index, so one bad item never sinks the batch. ``extractor([item]).only()``
is the single-item form that raises instead. Extractors are looked up by name in :data:`EXTRACTORS`.

The visual extractors also take one batch that :mod:`mcn.extract.batching` filled across windows and videos
(:meth:`run_batch`: one forward pass, raising on failure, since the batch's rows belong to several videos) and
count their forward passes and rows (``num_calls``, ``num_items``), which the extraction job reports.

On a GPU the 2D network runs in bfloat16 with ``channels_last`` and the 3D network in TF32 (half precision is
slower for grouped 3D convolutions); frames cross to the device as uint8 from pinned memory with non-blocking
copies and are normalised there; the 3D network's BatchNorms are folded into its convolutions. On the CPU
everything is float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mcn.extract import visual
from mcn.extract.batching import take_rows
from mcn.extract.constants import FEATURE_DIM

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

    from mcn.extract.text import Caption

MAX_STAGED_SHAPES = 4  # frame sizes whose pinned staging buffers a GPU extractor keeps
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BatchOutput:
    """One output per input item (None where it failed or has nothing) and ``failures``: index -> reason."""

    outputs: list[Any] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)

    def fail(self, index: int, error: BaseException) -> None:
        self.outputs[index] = None
        self.failures[index] = f"{type(error).__name__}: {error}"

    def only(self) -> Any:
        """The output of a one-item batch; raises RuntimeError if that item failed."""
        assert len(self.outputs) == 1, "only() is for one-item batches"
        if self.failures:
            raise RuntimeError(self.failures[0])
        return self.outputs[0]


def resolve_device(device: str) -> torch.device:
    """ "auto" -> the first CUDA device when there is one, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for but no CUDA GPU is visible; use device='cpu' or 'auto'"
        )
    return resolved


class _VisualExtractor:
    kind = ""
    fuse_bn = False

    def __init__(
        self, model: str, weights: str | None, download: bool, device: str, batch_size: int, precision: str
    ):
        if visual.model_kind(model) != self.kind:
            raise ValueError(
                f"model {model!r} is not a {self.kind} model; choose a {self.kind} name from {sorted(visual.MODELS)}"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.on_gpu = self.device.type == "cuda"
        self.precision = precision if self.on_gpu else "fp32"
        self.dtype = PRECISIONS[self.precision]
        self.batch_size = batch_size
        self.model_name = model
        self.num_calls = 0  # forward passes so far
        self.num_items = 0  # rows through them: 2D frames or 3D clips
        net = visual.build_model(model, weights, download)
        if self.fuse_bn:
            net = visual.fuse_batchnorm(net)
        if self.on_gpu:
            torch.backends.cudnn.benchmark = True  # input shapes repeat: let cuDNN pick the fastest kernels
            torch.backends.cudnn.allow_tf32 = self.precision != "fp32"
        self.model = self._place(net)

    def _place(self, net: torch.nn.Module) -> torch.nn.Module:
        return net.to(self.device, self.dtype).eval()

    def _stager(self, row_shape: torch.Size) -> _PinnedStager:
        """The pinned buffers for rows of ``row_shape``; the last few shapes are kept for reuse."""
        stagers = self.__dict__.setdefault("_stagers", {})
        key = tuple(row_shape)
        if key not in stagers:
            if len(stagers) >= MAX_STAGED_SHAPES:
                stagers.pop(next(iter(stagers)))
            stagers[key] = _PinnedStager(row_shape, self.batch_size)
        stagers[key] = stagers.pop(key)  # most recently used last
        return stagers[key]

    @torch.inference_mode()
    def _run(
        self, parts: Sequence[torch.Tensor], prepare: Callable[[torch.Tensor], torch.Tensor]
    ) -> np.ndarray:
        """uint8 CPU tensors, taken as one sequence along axis 0 -> (N, 2048) L2-normalised float16, in
        batches of ``batch_size`` rows.

        The parts are never concatenated. On a GPU each batch is gathered into one of two reusable pinned
        buffers and copied without blocking, so the host gathers batch k + 1 while the GPU runs batch k.
        """
        batches = list(_row_batches([len(part) for part in parts], self.batch_size))
        if not batches:
            return np.zeros((0, FEATURE_DIM), np.float16)
        stager = self._stager(parts[0].shape[1:]) if self.on_gpu else None
        feats = []
        for pieces in batches:
            if stager is not None:
                batch = stager.stage(parts, pieces, self.device)
            elif len(pieces) == 1:
                part, start, stop = pieces[0]
                batch = parts[part][start:stop]
            else:
                batch = torch.cat([parts[part][start:stop] for part, start, stop in pieces])
            feats.append(visual.l2_normalise(self.model(prepare(batch))).half())
            self.num_calls += 1
            self.num_items += len(batch)
        return torch.cat(feats).cpu().numpy()

    def run_batch(
        self, parts: Sequence[np.ndarray], bounds: Sequence[tuple[int, int]] | None = None
    ) -> list[np.ndarray]:
        """Features of each part of one filled batch (at most ``batch_size`` rows of one frame size: one
        forward pass); with ``bounds``, of rows [start, stop) of each part (a piece of a window, see
        :mod:`mcn.extract.batching`). Raises RuntimeError when the batch fails: its rows may belong to several
        videos."""
        if bounds is not None:
            parts = [take_rows(self.kind, part, *rows) for part, rows in zip(parts, bounds, strict=True)]
        result = self(parts)
        if result.failures:
            index = min(result.failures)
            raise RuntimeError(f"batch part {index} of {len(parts)}: {result.failures[index]}")
        return result.outputs


def _row_batches(lengths: Sequence[int], batch_size: int):
    """For consecutive batches of ``batch_size`` rows over parts of ``lengths`` rows (taken in order), yield
    each batch as a list of (part index, start row, stop row) pieces."""
    pieces, filled = [], 0
    for part, length in enumerate(lengths):
        start = 0
        while start < length:
            stop = min(length, start + batch_size - filled)
            pieces.append((part, start, stop))
            filled += stop - start
            start = stop
            if filled == batch_size:
                yield pieces
                pieces, filled = [], 0
    if pieces:
        yield pieces


class _PinnedStager:
    """Two pinned host buffers that batches are gathered into in turn; a buffer is refilled only after the
    copy that last read it has finished (a CUDA event), so gathering overlaps the GPU's work."""

    def __init__(self, row_shape: torch.Size, batch_size: int):
        self.buffers = [
            torch.empty((batch_size, *row_shape), dtype=torch.uint8, pin_memory=True) for _ in range(2)
        ]
        self.events: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def stage(
        self, parts: Sequence[torch.Tensor], pieces: list[tuple[int, int, int]], device: torch.device
    ) -> torch.Tensor:
        turn, self.turn = self.turn, 1 - self.turn
        if self.events[turn] is not None:
            self.events[turn].synchronize()
        buffer, filled = self.buffers[turn], 0
        for part, start, stop in pieces:
            buffer[filled : filled + stop - start].copy_(parts[part][start:stop])
            filled += stop - start
        batch = buffer[:filled].to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.events[turn] = event
        return batch


class Frame2DExtractor(_VisualExtractor):
    """uint8 frames (T, H, W, 3) per item -> (T, 2048) float16, L2-normalised rows.

    Items with the same frame size are run together, so short videos still fill the GPU batches.
    """

    kind = "2d"

    def __init__(
        self,
        model: str = "resnet152",
        weights: str | None = None,
        download: bool = False,
        device: str = "auto",
        batch_size: int = 128,
        precision: str = "bf16",
    ):
        super().__init__(model, weights, download, device, batch_size, precision)

    def _place(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.on_gpu:
            net = net.to(memory_format=torch.channels_last)
        return super()._place(net)

    def __call__(self, items: Sequence[np.ndarray]) -> BatchOutput:
        result = BatchOutput(outputs=[None] * len(items))
        groups: dict[tuple[int, int], list[int]] = {}
        for index, frames in enumerate(items):
            if not (
                isinstance(frames, np.ndarray)
                and frames.dtype == np.uint8
                and frames.ndim == 4
                and frames.shape[-1] == 3
            ):
                result.fail(index, ValueError(f"expected uint8 frames (T, H, W, 3), got {_describe(frames)}"))
            else:
                groups.setdefault(frames.shape[1:3], []).append(index)
        for indices in groups.values():
            try:
                feats_ND = self._run([torch.from_numpy(items[i]) for i in indices], self._prepare)
            except Exception as error:  # the whole group failed (e.g. out of memory): record it on each item
                for index in indices:
                    result.fail(index, error)
                continue
            bounds = np.cumsum([0] + [len(items[i]) for i in indices])
            for index, start, stop in zip(indices, bounds[:-1], bounds[1:], strict=True):
                result.outputs[index] = feats_ND[start:stop]
        return result

    def _prepare(self, frames_NHWC: torch.Tensor) -> torch.Tensor:
        return visual.preprocess_2d(frames_NHWC, self.dtype)


class Clip3DExtractor(_VisualExtractor):
    """uint8 frames (T, 112, 112, 3) at 24 fps per item -> (ceil(T / 16), 2048) float16, L2-normalised rows.

    Each item is zero-padded to a multiple of 16 frames and cut into non-overlapping 16-frame clips; the clips
    of all items run together.
    """

    kind = "3d"
    fuse_bn = True  # +4% clips/s in TF32 on an H200 (for the 2D network in bf16 it costs 12%)

    def __init__(
        self,
        model: str = "resnext101",
        weights: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        precision: str = "tf32",
    ):
        super().__init__(model, weights, False, device, batch_size, precision)

    def __call__(self, items: Sequence[np.ndarray]) -> BatchOutput:
        result = BatchOutput(outputs=[None] * len(items))
        clips, indices = [], []
        for index, frames in enumerate(items):
            if not (
                isinstance(frames, np.ndarray)
                and frames.dtype == np.uint8
                and frames.ndim == 4
                and frames.shape[1:] == (112, 112, 3)
            ):
                result.fail(
                    index, ValueError(f"expected uint8 frames (T, 112, 112, 3), got {_describe(frames)}")
                )
                continue
            clips.append(visual.pad_to_clips(torch.from_numpy(frames)))
            indices.append(index)
        if not indices:
            return result
        try:
            feats_ND = self._run(clips, self._prepare)
        except Exception as error:  # the whole batch failed (e.g. out of memory): record it on each item
            for index in indices:
                result.fail(index, error)
            return result
        bounds = np.cumsum([0] + [len(c) for c in clips])
        for index, start, stop in zip(indices, bounds[:-1], bounds[1:], strict=True):
            result.outputs[index] = feats_ND[start:stop]
        return result

    def _prepare(self, clips_NTHWC: torch.Tensor) -> torch.Tensor:
        return visual.normalise_clips_3d(clips_NTHWC).to(self.dtype)


class LogMelExtractor:
    """16 kHz mono float32 waveform per item -> (40, T) float16 log-mel (``extract.audio.log_mel``).

    An item of None (a video without an audio stream) gives None, which is not a failure.
    """

    def __init__(self) -> None:
        from mcn.extract.audio import log_mel

        self._log_mel = log_mel

    def __call__(self, items: Sequence[np.ndarray | None]) -> BatchOutput:
        result = BatchOutput(outputs=[None] * len(items))
        for index, waveform in enumerate(items):
            if waveform is None:
                continue
            try:
                result.outputs[index] = np.asarray(self._log_mel(waveform), np.float32).astype(np.float16)
            except Exception as error:
                result.fail(index, error)
        return result


class CaptionTokenizer:
    """Captions ``[(start, end, text), ...]`` per item -> a list of int32 token-id arrays (OOV dropped).

    Loads the word vectors once; remembers every id it has produced so :meth:`word_table` can return the
    rows a store needs.
    """

    def __init__(self, vectors: str | Path | KeyedVectors, binary: bool | None = None):
        from mcn.extract.text import load_word_vectors

        self.vectors = load_word_vectors(vectors, binary) if isinstance(vectors, (str, Path)) else vectors
        self.used_ids: set[int] = set()

    def __call__(self, items: Sequence[Sequence[Caption]]) -> BatchOutput:
        from mcn.extract.text import token_ids, tokenize

        result = BatchOutput(outputs=[None] * len(items))
        for index, captions in enumerate(items):
            try:
                ids = [token_ids(tokenize(text), self.vectors) for _, _, text in captions]
            except Exception as error:
                result.fail(index, error)
                continue
            for caption_ids in ids:
                self.used_ids.update(caption_ids.tolist())
            result.outputs[index] = ids
        return result

    def word_table(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(ids (U,) int32 sorted, words, vectors (U, W) float32) of every id produced so far."""
        ids = np.array(sorted(self.used_ids), dtype=np.int32)
        words = [self.vectors.index_to_key[i] for i in ids]
        vectors_UW = np.asarray(self.vectors.vectors[ids], np.float32).reshape(
            len(ids), self.vectors.vector_size
        )
        return ids, words, vectors_UW


def _describe(item: object) -> str:
    if isinstance(item, np.ndarray):
        return f"{item.dtype} array of shape {item.shape}"
    return type(item).__name__


EXTRACTORS: dict[str, type] = {
    "frame2d": Frame2DExtractor,
    "clip3d": Clip3DExtractor,
    "logmel": LogMelExtractor,
    "captions": CaptionTokenizer,
}


def build_extractor(name: str, **kwargs: Any) -> Any:
    """An extractor by registered name, e.g. ``build_extractor("frame2d", model="resnet152-tiny", device="cpu")``."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
    return EXTRACTORS[name](**kwargs)
