"""The training reader: fixed order, rank/worker split, per-epoch shuffle, resumable position, loader workers that
persist across epochs."""

import os

import numpy as np
import pytest
import torch
from train_store import WORD_DIM, make_store, make_video

from mcn import store as store_format
from mcn.errors import MCNError
from mcn.train import data
from mcn.train.clips import ClipOptions
from mcn.train.data import TrainLoader, build_index, epoch_order

OPTIONS = ClipOptions(num_clips=3, min_time=2.0, max_frames=50, max_words=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    ids = make_store(root, [5, 4, 4], seconds=6, uncaptioned=("v003",))
    return root, ids


def epoch_batches(loader, count=None):
    batches = []
    for batch in loader:
        batches.append(batch)
        if count is not None and len(batches) == count:
            break
    return batches


def test_index_skips_uncaptioned_videos_in_shard_order(store):
    root, ids = store
    index = build_index(root)
    assert index.num_skipped == 1
    assert index.video_ids == [v for v in ids if v != "v003"]


@pytest.mark.parametrize("format_version", [1, 2])
@pytest.mark.parametrize("bad", [(np.nan, 1.0), (0.0, np.inf), (3.0, 1.0), (-1.0, 1.0)])
def test_invalid_caption_times_are_refused_naming_the_video(tmp_path, bad, format_version):
    rng = np.random.default_rng(0)
    videos = [make_video(f"v{i}", 6, 2, rng) for i in range(3)]
    videos[1].caption_start[1], videos[1].caption_end[1] = bad
    path = tmp_path / store_format.SHARD_DIR / store_format.shard_name(0)
    store_format.write_shard(path, videos, format_version=format_version)
    shards = [{"name": store_format.shard_name(0), "video_ids": [v.video_id for v in videos]}]
    store_format.write_manifest(tmp_path, {"shards": shards, "format_version": format_version})
    with pytest.raises(MCNError, match=r"1 videos .* invalid caption times: 'v1' \(caption 1 ") as error:
        build_index(tmp_path)
    assert "mcn store verify" in str(error.value) and "\n" not in str(error.value)


def test_a_torn_shard_is_a_one_line_error(tmp_path):
    make_store(tmp_path, [2, 2], seconds=6)
    shard = tmp_path / store_format.SHARD_DIR / store_format.shard_name(1)
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(MCNError, match="shard-000001.parquet is not a readable shard"):
        build_index(tmp_path)


def test_batches_follow_the_seeded_epoch_order(store):
    root, _ = store
    loader = TrainLoader(root, OPTIONS, global_batch_videos=4, seed=7)
    assert loader.batches_per_epoch == 3  # 12 captioned videos
    batches = epoch_batches(loader)
    order = epoch_order(12, seed=7, epoch=0)
    for b, batch in enumerate(batches):
        np.testing.assert_array_equal(batch["video_index"].numpy(), order[b * 4 : (b + 1) * 4])
        assert batch["video"].shape == (4 * 3, 4096)
        assert batch["audio"].shape == (4 * 3, 40, 50) and batch["audio"].dtype == torch.float16
        assert batch["text"].shape == (4 * 3, 5, WORD_DIM)
        assert batch["nframes"].shape == (12,)
    again = epoch_batches(TrainLoader(root, OPTIONS, global_batch_videos=4, seed=7))
    for first, second in zip(batches, again):
        for name in first:
            torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_shuffle_differs_per_epoch_and_seed():
    assert not np.array_equal(epoch_order(50, 1, 0), epoch_order(50, 1, 1))
    assert not np.array_equal(epoch_order(50, 1, 0), epoch_order(50, 2, 0))
    np.testing.assert_array_equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert sorted(epoch_order(50, 1, 3)) == list(range(50))


def test_ranks_and_workers_cover_every_video_once_per_epoch(store):
    root, _ = store
    index = build_index(root)
    for epoch in (0, 1):
        seen = []
        per_rank = []
        for rank in range(2):
            loader = TrainLoader(
                root, OPTIONS, 4, seed=3, rank=rank, world_size=2, num_workers=2, index=index
            )
            loader.epoch, loader.batches_done = epoch, 0
            batches = epoch_batches(loader)
            assert len(batches) == 3
            per_rank.append([b["video_index"].tolist() for b in batches])
            seen += [v for b in batches for v in b["video_index"].tolist()]
        assert sorted(seen) == list(range(12))
        # rank 0 then rank 1 of each step together form the single-process global batch, in order
        single = epoch_batches(_at_epoch(TrainLoader(root, OPTIONS, 4, seed=3, index=index), epoch))
        for step, batch in enumerate(single):
            assert per_rank[0][step] + per_rank[1][step] == batch["video_index"].tolist()


def _at_epoch(loader, epoch):
    loader.epoch, loader.batches_done = epoch, 0
    return loader


def test_epochs_roll_over_and_clips_change_with_the_epoch(store):
    root, _ = store
    loader = TrainLoader(root, OPTIONS, 4, seed=5)
    first = epoch_batches(loader)
    second = epoch_batches(loader)
    assert loader.epoch == 1 and len(second) == 3
    first_video = {
        int(v): b["start"][i * 3 : (i + 1) * 3] for b in first for i, v in enumerate(b["video_index"])
    }
    second_video = {
        int(v): b["start"][i * 3 : (i + 1) * 3] for b in second for i, v in enumerate(b["video_index"])
    }
    assert any(not torch.equal(first_video[v], second_video[v]) for v in first_video)


def test_persistent_workers_follow_each_epochs_order(store, monkeypatch):
    root, _ = store
    index = build_index(root)
    collate = data.collate_videos
    # each batch says which process built it (the workers fork with this module as patched here)
    monkeypatch.setattr(
        data, "collate_videos", lambda items: {**collate(items), "pid": torch.tensor(os.getpid())}
    )
    loader = TrainLoader(root, OPTIONS, 4, seed=9, num_workers=2, index=index)
    epochs = [epoch_batches(loader) for _ in range(3)]
    single = TrainLoader(root, OPTIONS, 4, seed=9, index=index)
    for batches in epochs:
        expected = epoch_batches(single)
        assert len(batches) == len(expected) == 3
        for mine, theirs in zip(batches, expected):
            assert torch.equal(mine["video_index"], theirs["video_index"])
            assert torch.equal(mine["start"], theirs["start"])  # the epoch's clips
    orders = {tuple(v for b in batches for v in b["video_index"].tolist()) for batches in epochs}
    assert len(orders) == 3  # a new shuffle every epoch
    pids = [{int(b["pid"]) for b in batches} for batches in epochs]
    assert len(pids[0]) == 2 and os.getpid() not in pids[0]
    assert pids[0] == pids[1] == pids[2]  # the same two worker processes built every epoch


def test_state_dict_resume_gives_the_same_batches(store):
    root, _ = store
    index = build_index(root)
    uninterrupted = TrainLoader(root, OPTIONS, 4, seed=11, num_workers=2, index=index)
    expected = epoch_batches(uninterrupted) + epoch_batches(uninterrupted)

    loader = TrainLoader(root, OPTIONS, 4, seed=11, index=index)
    got = epoch_batches(loader, count=2)
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["batches_done"] == 2
    resumed = TrainLoader(root, OPTIONS, 4, seed=11, num_workers=2, index=index)
    resumed.load_state_dict(state)
    got += epoch_batches(resumed)  # the rest of epoch 0
    got += epoch_batches(resumed)  # epoch 1
    assert len(got) == len(expected) == 6
    for mine, theirs in zip(got, expected):
        for name in theirs:
            torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0)


def test_resume_refuses_a_different_world(store):
    root, _ = store
    state = TrainLoader(root, OPTIONS, 4, seed=1).state_dict()
    other = TrainLoader(root, OPTIONS, 4, seed=1, rank=0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        other.load_state_dict(state)


def test_batch_larger_than_the_store_is_a_clear_error(store):
    root, _ = store
    with pytest.raises(ValueError, match="lower the batch size"):
        TrainLoader(root, OPTIONS, 64, seed=1)
