"""Model batches filled across frame windows and videos, and their outputs split back per window.

A model input (one window's 2D frames or 3D frames) is an *item* of ``num_rows`` batch rows: a 2D frame is
one row, a 16-frame 3D clip is one row. A :class:`BatchFiller` takes items in arrival order and cuts batches
of exactly ``batch_size`` rows out of them (an item may be split between two batches), one *group* at a time
(rows of one batch must stack: 2D frames of one size). Each batch is a list of :class:`Piece` s; the model's
output for each piece goes back through :meth:`BatchFiller.deliver`, which returns every item whose rows have
all come back, in row order, whatever order the batches finish in.

The filler never looks at the payload (the frames, or a handle to frames held elsewhere, e.g. a Ray object),
so the same code fills batches in one process (:class:`mcn.extract.VideoExtractor`) and across the videos of
the extraction job. No torch here: the decoding side uses :func:`num_rows` and :func:`batch_group` too.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcn.extract.constants import CLIP_FRAMES

MODEL_KINDS = ("2d", "3d")


def num_rows(kind: str, num_frames: int) -> int:
    """Batch rows of ``num_frames`` frames: one per 2D frame, one per 16-frame 3D clip (the last one padded)."""
    return num_frames if kind == "2d" else math.ceil(num_frames / CLIP_FRAMES)


def batch_group(kind: str, frames_THWC: np.ndarray) -> tuple[int, ...]:
    """Which items may share a batch: 2D frames of one size; 3D frames are all the same size."""
    return tuple(frames_THWC.shape[1:3]) if kind == "2d" else ()


def take_rows(kind: str, frames_THWC: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The frames of rows [start, stop) of an item."""
    scale = 1 if kind == "2d" else CLIP_FRAMES
    return frames_THWC[start * scale : stop * scale]


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of the item ``key``, whose frames ``payload`` holds (or refers to)."""

    key: Hashable
    payload: Any
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


@dataclass
class _Item:
    key: Hashable
    payload: Any
    num_rows: int
    since: float  # when it was added (time.monotonic)
    taken: int = 0  # rows already cut into batches


class BatchFiller:
    """Items in, batches of ``batch_size`` rows out (see the module docstring); outputs back per item."""

    def __init__(self, batch_size: int):
        assert batch_size >= 1
        self.batch_size = batch_size
        self._waiting: dict[Hashable, deque[_Item]] = {}  # group -> items with rows not yet in a batch
        self._num_waiting: dict[Hashable, int] = {}  # group -> those rows
        self._outputs: dict[
            Hashable, tuple[int, dict[int, np.ndarray]]
        ] = {}  # key -> (rows, start -> output)

    def add(
        self, key: Hashable, payload: Any, num_rows: int, group: Hashable = (), now: float | None = None
    ) -> None:
        """Queue an item of ``num_rows`` >= 1 rows (a key must be new)."""
        assert num_rows >= 1 and key not in self._outputs, key
        self._outputs[key] = (num_rows, {})
        item = _Item(key, payload, num_rows, time.monotonic() if now is None else now)
        self._waiting.setdefault(group, deque()).append(item)
        self._num_waiting[group] = self._num_waiting.get(group, 0) + num_rows

    @property
    def num_waiting(self) -> int:
        """Rows not yet cut into a batch."""
        return sum(self._num_waiting.values())

    def oldest(self) -> float | None:
        """When the longest-waiting item still holding rows was added; None when nothing waits."""
        return min((items[0].since for items in self._waiting.values() if items), default=None)

    def full_batch(self) -> list[Piece] | None:
        """The next full batch the waiting rows make (None when no group has a batch's worth)."""
        group = next((g for g, rows in self._num_waiting.items() if rows >= self.batch_size), None)
        return None if group is None else self._cut(group)

    def partial_batch(self) -> list[Piece] | None:
        """Up to ``batch_size`` rows of the group that has waited longest (None when nothing waits)."""
        waiting = [(items[0].since, group) for group, items in self._waiting.items() if items]
        if not waiting:
            return None
        return self._cut(min(waiting, key=lambda pair: pair[0])[1])

    def _cut(self, group: Hashable) -> list[Piece]:
        items, pieces, room = self._waiting[group], [], self.batch_size
        while items and room:
            item = items[0]
            stop = min(item.num_rows, item.taken + room)
            pieces.append(Piece(item.key, item.payload, item.taken, stop))
            room -= stop - item.taken
            item.taken = stop
            if stop == item.num_rows:
                items.popleft()
        self._num_waiting[group] -= self.batch_size - room
        if not items:
            del self._waiting[group], self._num_waiting[group]
        return pieces

    def deliver(
        self, pieces: Sequence[Piece], outputs: Sequence[np.ndarray]
    ) -> list[tuple[Hashable, np.ndarray]]:
        """Record each piece's output (rows in the piece's order); return the items now complete, with all
        their rows. Pieces of dropped items are ignored."""
        assert len(pieces) == len(outputs)
        done = []
        for piece, output in zip(pieces, outputs, strict=True):
            if piece.key not in self._outputs:
                continue
            assert len(output) == piece.num_rows, (piece, len(output))
            num_rows, parts = self._outputs[piece.key]
            parts[piece.start] = output
            if sum(len(part) for part in parts.values()) == num_rows:
                del self._outputs[piece.key]
                done.append((piece.key, np.concatenate([parts[start] for start in sorted(parts)])))
        return done

    def drop(self, matches: Callable[[Hashable], bool]) -> None:
        """Forget the items whose key ``matches``: their waiting rows and any outputs already back."""
        for key in [key for key in self._outputs if matches(key)]:
            del self._outputs[key]
        for group, items in list(self._waiting.items()):
            kept = deque(item for item in items if not matches(item.key))
            self._num_waiting[group] = sum(item.num_rows - item.taken for item in kept)
            self._waiting[group] = kept
            if not kept:
                del self._waiting[group], self._num_waiting[group]

    def __len__(self) -> int:
        """Items not yet complete (waiting, or out in batches)."""
        return len(self._outputs)
