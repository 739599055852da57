"""A tiny synthetic feature store for the training tests, written with mcn.store's own writers, and what the
tests that run training in other processes share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mcn import store

WORD_DIM = 6
VOCAB = 12
FEATURE_DIM = 2048


def make_video(video_id: str, seconds: int, num_captions: int, rng: np.random.Generator) -> store.VideoRecord:
    """A video with random features and ``num_captions`` consecutive captions over its duration."""
    bounds = np.sort(rng.uniform(0, seconds, size=2 * num_captions)).astype(np.float32)
    return store.VideoRecord(
        video_id=video_id,
        duration=float(seconds),
        has_audio=True,
        caption_source="vtt",
        feat_2d=rng.standard_normal((seconds, FEATURE_DIM)).astype(np.float16),
        feat_3d=rng.standard_normal((int(seconds * 1.5), FEATURE_DIM)).astype(np.float16),
        logmel=rng.standard_normal((40, seconds * 100)).astype(np.float16),
        caption_start=bounds[0::2],
        caption_end=bounds[1::2],
        caption_text=[f"caption {i}" for i in range(num_captions)],
        caption_token_ids=[
            rng.integers(0, VOCAB, size=rng.integers(0, 8)).astype(np.int32) for _ in range(num_captions)
        ],
    )


def make_store(
    root: str | Path,
    videos_per_shard: list[int],
    seconds: int = 12,
    uncaptioned: tuple[str, ...] = (),
    seed: int = 0,
) -> list[str]:
    """Write a finished store; videos named in ``uncaptioned`` get no captions. Returns all video ids in order."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    shards, all_ids = [], []
    for shard_index, num_videos in enumerate(videos_per_shard):
        records = []
        for _ in range(num_videos):
            video_id = f"v{len(all_ids):03d}"
            num_captions = 0 if video_id in uncaptioned else int(rng.integers(1, 6))
            records.append(make_video(video_id, seconds, num_captions, rng))
            all_ids.append(video_id)
        store.write_shard(root / store.SHARD_DIR / store.shard_name(shard_index), records)
        shards.append({"name": store.shard_name(shard_index), "video_ids": [r.video_id for r in records]})
    vectors = rng.standard_normal((VOCAB, WORD_DIM)).astype(np.float32)
    store.write_words(root, np.arange(VOCAB), [f"w{i}" for i in range(VOCAB)], vectors)
    store.write_manifest(root, {"shards": shards, "num_videos": len(all_ids)})
    return all_ids


def store_fixture(videos_per_shard: list[int], seconds: int = 8):
    """A pytest fixture ``store``: one store of :func:`make_store` per test module (``store = store_fixture(...)``)."""

    @pytest.fixture(scope="module")
    def store(tmp_path_factory) -> Path:
        root = tmp_path_factory.mktemp("store")
        make_store(root, videos_per_shard, seconds=seconds)
        return root

    return store


def train_env() -> dict[str, str]:
    """The environment of a training subprocess: this one's as it is now (a test bucket's AWS_* variables
    included), one thread per process (the ranks and loader workers share two cores), tracebacks off."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MCN_DEBUG": ""}
