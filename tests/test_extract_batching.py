"""mcn.extract.batching: batches cut across items and groups, outputs split back per item whatever the order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcn.extract import batching, load_model, tiny_cpu
from mcn.extract.batching import BatchFiller


def rows_of(key: str, num_rows: int) -> np.ndarray:
    """A recognisable "feature" per row: (key's number, row index)."""
    return np.array([[int(key[1:]), row] for row in range(num_rows)], np.float32)


def fake_model(pieces) -> list[np.ndarray]:
    """What a model returns for a batch: one output row per input row, in the pieces' order."""
    return [rows_of(piece.key, piece.stop)[piece.start :] for piece in pieces]


def test_batches_are_full_and_split_items_between_them():
    filler = BatchFiller(4)
    filler.add("v1", "payload1", 3, now=0.0)
    assert filler.full_batch() is None and filler.num_waiting == 3
    filler.add("v2", "payload2", 6, now=1.0)
    batches = [filler.full_batch(), filler.full_batch()]
    assert filler.full_batch() is None
    assert [[(p.key, p.payload, p.start, p.stop) for p in b] for b in batches] == [
        [("v1", "payload1", 0, 3), ("v2", "payload2", 0, 1)],
        [("v2", "payload2", 1, 5)],
    ]
    assert filler.num_waiting == 1 and filler.oldest() == 1.0
    (last,) = [filler.partial_batch()]
    assert [(p.key, p.start, p.stop) for p in last] == [("v2", 5, 6)]
    assert filler.partial_batch() is None and filler.oldest() is None and filler.num_waiting == 0

    # Outputs come back in any order; an item is returned once all of its rows are back, in row order.
    assert filler.deliver(last, fake_model(last)) == []
    assert filler.deliver(batches[1], fake_model(batches[1])) == []
    done = filler.deliver(batches[0], fake_model(batches[0]))
    assert [key for key, _ in done] == ["v1", "v2"]
    for key, feats in done:
        np.testing.assert_array_equal(feats, rows_of(key, {"v1": 3, "v2": 6}[key]))
    assert len(filler) == 0


def test_groups_never_share_a_batch_and_the_oldest_group_goes_first():
    filler = BatchFiller(8)
    filler.add("v1", None, 3, group=(224, 398), now=5.0)
    filler.add("v2", None, 3, group=(398, 224), now=1.0)
    filler.add("v3", None, 3, group=(224, 398), now=6.0)
    assert filler.full_batch() is None
    first = filler.partial_batch()
    assert [p.key for p in first] == ["v2"]
    second = filler.partial_batch()
    assert [p.key for p in second] == ["v1", "v3"]


def test_dropped_items_leave_no_rows_and_their_late_outputs_are_ignored():
    filler = BatchFiller(4)
    filler.add(("a", 0, 0), None, 3)
    filler.add(("b", 0, 0), None, 3)
    batch = filler.full_batch()  # a's 3 rows and b's first row
    filler.drop(lambda key: key[0] == "b")
    assert filler.num_waiting == 0 and filler.partial_batch() is None
    outputs = [np.zeros((p.num_rows, 2)) for p in batch]
    assert [key for key, _ in filler.deliver(batch, outputs)] == [("a", 0, 0)]
    filler.add(("b", 1, 0), None, 2)  # a new attempt of the dropped video
    assert filler.num_waiting == 2


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_any_batch_size_gives_back_every_row_once(batch_size):
    rng = np.random.default_rng(batch_size)
    sizes = {f"v{i}": int(n) for i, n in enumerate(rng.integers(1, 20, 12))}
    filler, batches = BatchFiller(batch_size), []
    for key, num_rows in sizes.items():
        filler.add(key, None, num_rows, group=int(key[1:]) % 2)
        while (batch := filler.full_batch()) is not None:
            batches.append(batch)
    while (batch := filler.partial_batch()) is not None:
        batches.append(batch)
    assert all(sum(p.num_rows for p in b) <= batch_size for b in batches)
    full = sum(sum(p.num_rows for p in b) == batch_size for b in batches)
    assert len(batches) - full <= 2  # at most one partial batch per group
    done = {}
    for index in rng.permutation(len(batches)):
        done.update(filler.deliver(batches[index], fake_model(batches[index])))
    assert sorted(done) == sorted(sizes)
    for key, feats in done.items():
        np.testing.assert_array_equal(feats, rows_of(key, sizes[key]))


def test_rows_groups_and_slices_of_model_inputs():
    frames_3d = np.zeros((40, 112, 112, 3), np.uint8)
    assert batching.num_rows("3d", 40) == 3 and batching.num_rows("3d", 0) == 0
    assert batching.num_rows("2d", 7) == 7
    assert batching.batch_group("3d", frames_3d) == ()
    assert batching.batch_group("2d", np.zeros((2, 224, 398, 3), np.uint8)) == (224, 398)
    assert len(batching.take_rows("3d", frames_3d, 1, 3)) == 24  # clips 1 and 2; the last one is partial
    assert len(batching.take_rows("2d", frames_3d, 1, 3)) == 2


def test_batches_across_videos_give_the_features_of_one_video_at_a_time():
    """The tiny networks on windows of three videos: batches mixing them equal each video alone (up to float
    rounding: oneDNN picks its convolution kernels by batch size, so the last bit of a float16 may differ)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    config = tiny_cpu()
    windows = {
        "2d": [rng.integers(0, 256, (n, 64, 96, 3), dtype=np.uint8) for n in (5, 9, 3)],
        "3d": [rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8) for n in (48, 16, 40)],
    }
    for kind, items in windows.items():
        model = load_model(kind, config)
        alone = [model.run_batch([frames])[0] for frames in items]
        filler, done = BatchFiller(model.batch_size), {}
        for index, frames in enumerate(items):
            filler.add(
                index, frames, batching.num_rows(kind, len(frames)), batching.batch_group(kind, frames)
            )
        batches = [filler.full_batch()] if kind == "2d" else []  # 17 frames: 16 + 1; 7 clips: 0 + 7
        batches.append(filler.partial_batch())
        assert filler.partial_batch() is None
        assert any(len({p.key for p in b}) > 1 for b in batches)  # some batch mixes videos
        calls_before = model.num_calls
        for pieces in batches:
            bounds = [(p.start, p.stop) for p in pieces]
            done.update(filler.deliver(pieces, model.run_batch([p.payload for p in pieces], bounds)))
        assert model.num_calls - calls_before == len(batches)  # one forward pass per batch
        for index, feats in enumerate(alone):
            assert done[index].shape == feats.shape
            np.testing.assert_allclose(done[index].astype(np.float32), feats.astype(np.float32), atol=1e-4)
