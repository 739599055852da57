"""A tiny synthetic store, a tiny MCN checkpoint and matching benchmark definitions for the evaluation tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from mcn import store
from mcn.configs import config_to_dict

WORDS = [
    "crack",
    "the",
    "eggs",
    "whisk",
    "pour",
    "batter",
    "flip",
    "pancake",
    "serve",
    "plate",
    "add",
    "salt",
]
WORD_DIM = 6
FEATURE_DIM = 2048


def make_record(
    video_id: str, seconds: int, rng: np.random.Generator, audio: bool = True, source_path: str = ""
) -> store.VideoRecord:
    """Random features for ``seconds`` of video, two captions, optional audio."""
    captions = ["crack the eggs", "whisk the batter"]
    return store.VideoRecord(
        video_id=video_id,
        source_path=source_path,
        duration=float(seconds),
        has_audio=audio,
        caption_source="vtt",
        feat_2d=rng.standard_normal((seconds, FEATURE_DIM)).astype(np.float16),
        feat_3d=rng.standard_normal((int(seconds * 1.5), FEATURE_DIM)).astype(np.float16),
        logmel=rng.standard_normal((40, seconds * 100 if audio else 0)).astype(np.float16),
        caption_start=np.array([0.5, seconds / 2], np.float32),
        caption_end=np.array([seconds / 2 - 0.5, seconds - 0.5], np.float32),
        caption_text=captions,
        caption_token_ids=[np.array([WORDS.index(w) for w in c.split()], np.int32) for c in captions],
    )


def make_store(
    root: str | Path,
    num_videos: int = 6,
    seconds: int = 12,
    silent: tuple[str, ...] = (),
    sources: dict[str, str] | None = None,
    seed: int = 0,
) -> list[str]:
    """A finished two-shard store; videos in ``silent`` have no audio track. Returns the video ids."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [f"vid{i:02d}" for i in range(num_videos)]
    records = [make_record(v, seconds, rng, v not in silent, (sources or {}).get(v, "")) for v in ids]
    half = num_videos // 2
    shards = []
    for index, part in enumerate((records[:half], records[half:])):
        store.write_shard(root / store.SHARD_DIR / store.shard_name(index), part)
        shards.append({"name": store.shard_name(index), "video_ids": [r.video_id for r in part]})
    vectors = rng.standard_normal((len(WORDS), WORD_DIM)).astype(np.float32)
    store.write_words(root, np.arange(len(WORDS)), WORDS, vectors)
    store.write_manifest(root, {"shards": shards, "num_videos": num_videos})
    return ids


def tiny_model(seed: int = 0):
    from mcn.train.model import MCNModel, tiny

    torch.manual_seed(seed)
    config = dataclasses.replace(tiny(), video_dim=2 * FEATURE_DIM, word_dim=WORD_DIM)
    return MCNModel(config).eval()


def save_tiny_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """A model-only step folder that ``mcn.train.checkpoint.load_model`` reads."""
    from mcn.train.checkpoint import save_model_only

    model = tiny_model(seed)
    return save_model_only(model, folder, {"model": config_to_dict(model.config)})
