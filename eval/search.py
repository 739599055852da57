"""``mcn search``: rank a store's videos and moments for a text query.

Moments are sliding windows (10 s long, every 5 s) and the spans of the store's captions. Each moment is
embedded once per checkpoint as ``video + audio`` (video alone for videos without audio) and kept in an index,
``STORE/index/<fingerprint>.npz``, written atomically through :mod:`mcn.storage` (so in the bucket too when the
store is on object storage, where every machine that reads the store finds it); the fingerprint hashes the model
weights, the store's manifest (which lists every shard with its size and records the extractors' weights) and
the window settings, so a new checkpoint or a re-extracted store builds a new index and any later query reuses
it. A store that cannot be written (a read-only folder, a bucket that refuses uploads) is never changed: its
index goes to a local folder instead (:func:`local_index_folder`), one subfolder per store location. A video's
score is its best moment's score.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mcn import options, storage
from mcn.configs import config_to_dict, save_config
from mcn.errors import MCNError
from mcn.eval import embed
from mcn.eval.cli import COMMON_BINDINGS
from mcn.eval.config import SEARCH_PRESETS, AudioConfig, SearchConfig, WindowConfig
from mcn.store import StoreReader, VideoRecord

logger = logging.getLogger(__name__)

DESCRIPTION = "search a store's videos and moments (10 s windows and caption spans) by text"
EPILOG = """examples:
  mcn search store/ --checkpoint runs/demo "crack the eggs into a bowl"
  mcn search store/ --checkpoint mcn_released.pth "whisk" -k 20 --device cuda
  mcn search store/ --checkpoint runs/demo "pour" --set windows.window_s=20 --set windows.hop_s=10
  mcn search /mnt/shared/store --checkpoint runs/demo "flip" --index-dir ~/indexes   # a read-only store
"""

INDEX_DIR = "index"
INDEX_VERSION = 2
LOCAL_INDEX_DIR = "search-index"  # below the cache folder


@dataclass
class SearchIndex:
    """M moments: ``video_ids`` (M,), ``starts``/``ends`` (M,) seconds, ``kinds`` (M,) "window"|"caption",
    ``embeddings_MD`` (M, D) float32."""

    video_ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    kinds: np.ndarray
    embeddings_MD: np.ndarray


def moment_spans(record: VideoRecord, settings: WindowConfig) -> list[tuple[float, float, str]]:
    """Sliding windows over the video, then its caption spans."""
    duration = max(float(record.duration), 0.0)
    spans = []
    start = 0.0
    while True:
        spans.append((start, min(start + settings.window_s, duration), "window"))
        if start + settings.window_s >= duration:
            break
        start += settings.hop_s
    if settings.captions and record.caption_start is not None:
        spans += [(float(s), float(e), "caption") for s, e in zip(record.caption_start, record.caption_end)]
    return spans


def fingerprint(
    model: torch.nn.Module, reader: StoreReader, settings: WindowConfig, audio: AudioConfig
) -> str:
    """Hash of the weights, the store's manifest, the window settings and the log-mel padding.

    The manifest is written last by every job that changes a store and names each shard with its video ids and
    byte size, and the extractors with their weights' sha256, so a store extracted again never matches an
    older index."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    identity = {
        "version": INDEX_VERSION,
        "manifest": reader.manifest,
        "settings": config_to_dict(settings),
        "audio": config_to_dict(audio),
    }
    digest.update(json.dumps(identity, sort_keys=True).encode())
    return digest.hexdigest()


def local_index_folder(root: storage.StorePath, index_dir: str | None = None) -> storage.StorePath:
    """Where the indexes of the store at ``root`` go when the store cannot hold them: a folder of
    ``index_dir`` (default: ``search-index`` in :func:`mcn.storage.cache_folder`) named after the store's location (the
    resolved path, or the URL), so that two stores never share one."""
    base = os.path.expanduser(index_dir) if index_dir else storage.cache_folder() / LOCAL_INDEX_DIR
    location = str(root).rstrip("/") if storage.is_remote(root) else str(storage.local_path(root).resolve())
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", location)[-48:].strip("-.")
    tag = hashlib.blake2b(location.encode(), digest_size=8).hexdigest()
    return storage.join(base, f"{readable}-{tag}")


def build_index(
    model,
    reader: StoreReader,
    settings: WindowConfig,
    audio: AudioConfig,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SearchIndex:
    """Embed every moment of every video in the store."""
    video_ids, starts, ends, kinds, audio_flags = [], [], [], [], []

    def items():
        for record in reader.iter_videos(
            ("duration", "has_audio", "feat_2d", "feat_3d", "logmel", "captions")
        ):
            has_audio = bool(record.has_audio) and record.logmel.shape[1] > 0
            for start, end, kind in moment_spans(record, settings):
                video_ids.append(record.video_id)
                starts.append(start)
                ends.append(end)
                kinds.append(kind)
                audio_flags.append(has_audio)
                yield embed.clip_inputs(record, start, end, settings.audio_frames, audio.logmel_padding)

    stream = tqdm(items(), desc="moments", unit=" moments", disable=not progress, leave=False)
    emb = embed.embed_stream(model, stream, batch_size, device)
    if not video_ids:
        raise MCNError(f"store {reader.root} holds no videos to search")
    with_audio = np.asarray(audio_flags)[:, None]
    return SearchIndex(
        np.asarray(video_ids),
        np.asarray(starts, np.float32),
        np.asarray(ends, np.float32),
        np.asarray(kinds),
        emb["video"] + np.where(with_audio, emb["audio"], 0.0).astype(np.float32),
    )


def save_index(path: storage.StorePath, index: SearchIndex) -> None:
    with storage.atomic_write(path) as file:
        np.savez(
            file,
            video_ids=index.video_ids,
            starts=index.starts,
            ends=index.ends,
            kinds=index.kinds,
            embeddings_MD=index.embeddings_MD,
        )


def load_index(path: storage.StorePath) -> SearchIndex:
    with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as data:
        return SearchIndex(
            **{name: data[name] for name in ("video_ids", "starts", "ends", "kinds", "embeddings_MD")}
        )


def index_for(
    model, reader: StoreReader, config: SearchConfig, device: str | torch.device = "cpu"
) -> tuple[SearchIndex, storage.StorePath, bool]:
    """The store's index for this model: loaded from the store or from :func:`local_index_folder` when it is
    there, else built and saved with the config that built it (``<fingerprint>.config.json``), in the store
    when it can be written, else in the local folder. Returns (index, path, built)."""
    key = fingerprint(model, reader, config.windows, config.audio)
    in_store = storage.join(reader.root, INDEX_DIR)
    outside = local_index_folder(reader.root, config.index_dir)
    if not config.rebuild:
        for folder in (in_store, outside):
            path = storage.join(folder, f"{key}.npz")
            if storage.is_file(path):
                return load_index(path), path, False
    runtime = config.runtime
    index = build_index(
        model, reader, config.windows, config.audio, runtime.batch_size, device, runtime.progress
    )
    try:
        return index, _save(in_store, key, index, config), True
    except OSError as error:
        refusal = " ".join(str(error).split())
    logger.warning(
        "the store cannot be written (%s): its index goes to %s instead (--index-dir chooses the folder)",
        refusal,
        outside,
    )
    try:
        return index, _save(outside, key, index, config), True
    except OSError as error:
        raise MCNError(
            f"cannot write the search index in the store ({refusal}) nor in {outside} "
            f"({' '.join(str(error).split())}); give a writable folder with --index-dir or $MCN_CACHE_DIR"
        ) from None


def _save(folder: storage.StorePath, key: str, index: SearchIndex, config: SearchConfig) -> storage.StorePath:
    path = storage.join(folder, f"{key}.npz")
    save_index(path, index)
    save_config(config, storage.join(folder, f"{key}.config.json"))
    return path


@torch.no_grad()
def query_scores(
    model, index: SearchIndex, vectorizer: embed.TextVectorizer, query: str, device: str = "cpu"
) -> np.ndarray:
    """Raw dot products of the query's text embedding with every moment, (M,)."""
    words = vectorizer(query, embed.CAPTION_MAX_WORDS)
    if not words.any():
        raise MCNError(
            f"none of the words of {query!r} has a vector in the store's word table or the word2vec file"
        )
    text_D = embed.embed_stream(model, [{"text": words}], 1, device)["text"][0]
    return index.embeddings_MD @ text_D


BINDINGS = {
    options.Flag("--checkpoint", "step-N folder, RUN folder or released MCN .pth", "CKPT"): "checkpoint",
    options.Flag("-k", "results to print (default: 10)", "K"): "k",
    options.Flag("--rebuild", "rebuild the index even when one exists", switch=True): "rebuild",
    options.Flag(
        "--index-dir",
        "folder for the index when the store cannot be written "
        "(default: search-index/ in $MCN_CACHE_DIR, else in $XDG_CACHE_HOME/mcn or ~/.cache/mcn)",
        "DIR",
    ): "index_dir",
    **COMMON_BINDINGS,  # device, batch size, progress, word vectors, missing words, log-mel padding
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a finished feature store")
    parser.add_argument("query", nargs="+", help="the query text")
    options.add_preset_and_set(parser, SEARCH_PRESETS, "default")
    options.add_flags(parser, BINDINGS, required=(next(iter(BINDINGS)),))


def build_config(args: argparse.Namespace) -> SearchConfig:
    fixed = {"store": args.store, "query": " ".join(args.query)}
    return options.build_config(SEARCH_PRESETS, args, BINDINGS, fixed=fixed)


def run(args: argparse.Namespace) -> int:
    from mcn.eval.jobs import load_checkpoint, query_vectorizer

    config = build_config(args)
    reader = StoreReader(config.store)
    device = config.runtime.torch_device()
    vectorizer = query_vectorizer(reader, config.text, [config.query])
    model = load_checkpoint(config.checkpoint, device)
    index, path, built = index_for(model, reader, config, device)
    logger.info("%s index %s (%d moments)", "built" if built else "using", path, len(index.video_ids))
    scores = query_scores(model, index, vectorizer, config.query, device)
    order = np.argsort(-scores, kind="stable")
    print(f"videos for {config.query!r}:")
    seen: list[str] = []
    for row in order:
        if index.video_ids[row] not in seen:
            seen.append(index.video_ids[row])
            print(
                f"  {len(seen):>3}  {index.video_ids[row]:<30} best {index.starts[row]:7.1f}-{index.ends[row]:7.1f} s  score {scores[row]:.4f}"
            )
            if len(seen) == config.k:
                break
    print("\nmoments:")
    for rank, row in enumerate(order[: config.k], 1):
        print(
            f"  {rank:>3}  {index.video_ids[row]:<30} {index.starts[row]:7.1f}-{index.ends[row]:7.1f} s  "
            f"score {scores[row]:.4f}  ({index.kinds[row]})"
        )
    return 0
