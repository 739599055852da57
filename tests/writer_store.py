"""A small finished store written by the extraction job's own StoreWriter (no Ray, no decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors
from store_formats import write_format1_shard

from mcn import storage, store
from mcn.pipeline.config import ShardConfig
from mcn.pipeline.writer import StoreWriter

WORDS = ["cut", "the", "onion", "stir", "pot"]
IDENTITY = {"model_2d": "resnet152-tiny", "weights_2d": "random-init", "decode": {"rate_2d": 1.0}}


def word_vectors() -> KeyedVectors:
    vectors = KeyedVectors(vector_size=4)
    vectors.add_vectors(WORDS, np.random.default_rng(0).standard_normal((len(WORDS), 4)).astype(np.float32))
    return vectors


def record(video_id: str, seconds: int = 3, token_ids: list[list[int]] | None = None) -> store.VideoRecord:
    """A video with random unit-free features and one caption per entry of ``token_ids``."""
    rng = np.random.default_rng(abs(hash(video_id)) % 2**32)
    token_ids = [[0, 1, 2], [3, 1, 4]] if token_ids is None else token_ids
    return store.VideoRecord(
        video_id=video_id,
        source_path=f"/videos/{video_id}.mp4",
        duration=float(seconds),
        fps=25.0,
        width=160,
        height=120,
        has_audio=True,
        caption_source="vtt",
        feat_2d=rng.standard_normal((seconds, 2048)).astype(np.float16),
        feat_3d=rng.standard_normal((int(seconds * 1.5), 2048)).astype(np.float16),
        logmel=rng.standard_normal((40, seconds * 100)).astype(np.float16),
        caption_start=np.arange(len(token_ids), dtype=np.float32),
        caption_end=np.arange(len(token_ids), dtype=np.float32) + 1,
        caption_text=[" ".join(WORDS[i] for i in ids) for ids in token_ids],
        caption_token_ids=[np.array(ids, np.int32) for ids in token_ids],
    )


def failure(video_id: str, reason: str = "corrupt") -> dict:
    return {
        "video_id": video_id,
        "source_path": f"/videos/{video_id}.mp4",
        "stage": "decode",
        "reason": reason,
    }


def write_store(
    root: str | Path, video_ids: list[str], failed: dict[str, str] | None = None, max_videos: int = 2
) -> Path | str:
    """A finished store holding ``video_ids`` (shards of ``max_videos``) and ``failed`` (id -> reason)."""
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=max_videos))
    writer.open()
    try:
        for video_id in video_ids:
            writer.add(record(video_id))
        writer.record_failures([failure(v, r) for v, r in (failed or {}).items()])
        writer.finish(
            word_vectors(), {"vocabulary": {"word_vectors": None, "dim": 4}}, {"extracted": len(video_ids)}
        )
    finally:
        writer.close()
    return storage.join(root)


def as_format_1(root: str | Path) -> None:
    """Rewrite a store's shards as the first format-1 writer wrote them (a store made before format 2)."""
    for path in store.list_shards(root):
        write_format1_shard(path, list(store.iter_shard(path)))
    manifest = store.read_manifest(root)
    if manifest is not None:
        store.write_manifest(root, {**manifest, "format_version": 1})
