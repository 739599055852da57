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


def naive_median(values) -> float:
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def naive_protocol_metrics(similarity, keep, num_annotated: int, denominator: str, median: str) -> dict:
    """A protocol by brute force, written independently of mcn.eval.retrieval.

    ``similarity`` is over the clips found in the store (row i = clip i's text, column j = clip j), ``keep`` the
    clips the gallery rule keeps. A row's rank is how many other kept clips score at least as high as its own;
    R@k divides by the rows (``rows``) or by every annotated clip (``annotated``); the median and mean are over
    the rows, or the rows plus rank ``num_annotated`` for every annotated clip that is not a row.
    """
    ranks = []
    for i in keep:
        ranks.append(sum(1 for j in keep if j != i and similarity[i][j] >= similarity[i][i]))
    counted = len(ranks) if denominator == "rows" else num_annotated
    ordered = ranks if median == "rows" else ranks + [num_annotated] * (num_annotated - len(ranks))
    metrics = {f"R@{k}": sum(r < k for r in ranks) / counted for k in (1, 5, 10)}
    metrics["MedR"] = naive_median(ordered) + 1
    metrics["MeanR"] = sum(ordered) / len(ordered) + 1
    return metrics


def direct_similarities(store_root, checkpoint, clips, audio_frames: int):
    """Full T·(V+A) and T·V matrices over the clips found, from direct model calls; and the audio mask."""
    from mcn.train.checkpoint import load_model
    from mcn.train.clips import audio_window, pool_video

    reader = store.StoreReader(store_root)
    model, _ = load_model(checkpoint)
    video, audio, text, with_audio = [], [], [], []
    for clip in clips:
        if clip.video_id not in reader:
            continue
        record = reader.read(clip.video_id)
        window, nframes = audio_window(record.logmel, clip.start, clip.end, audio_frames)
        ids = [WORDS.index(w) for w in clip.text.split() if w in WORDS][:20]
        words = np.zeros((20, reader.words.dim), np.float32)
        words[: len(ids)] = reader.words.lookup(np.array(ids))
        with torch.no_grad():
            pooled = pool_video(record.feat_2d, record.feat_3d, clip.start, clip.end)
            video.append(model.encode_video(torch.from_numpy(pooled)[None])[0])
            audio.append(model.encode_audio(torch.from_numpy(window)[None], torch.tensor([nframes]))[0])
            text.append(model.encode_text(torch.from_numpy(words)[None])[0])
        with_audio.append(bool(record.has_audio))
    video, audio, text = (torch.stack(x).numpy() for x in (video, audio, text))
    mask = np.array(with_audio)
    audio = audio * mask[:, None]  # a clip without audio is its video alone
    return {"text_to_video_audio": text @ (video + audio).T, "text_to_video": text @ video.T}, mask
