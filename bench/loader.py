"""Training-loader throughput: clips per second per CPU core, and the cores needed to keep a GPU fed.

Writes a synthetic store of HowTo100M-sized videos (or reads --store), then times one loader process
(``num_workers=0``: decode + clip cutting + collate in the calling process, i.e. one core's work).

    python bench/loader.py                       # 24 synthetic 5-minute videos
    python bench/loader.py --store store/ --batches 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mcn import store
from mcn.store import read_shard_video, read_words
from mcn.train.clips import ClipOptions, sample_video_clips
from mcn.train.data import DECODE_FIELDS, TrainLoader, build_index

GPU_TARGETS = {
    "reference step, one H200 (9,700 clips/s)": 9_700,
    "target step of 4,096 clips in 0.2 s": 19_000,
}


def synthetic_store(root: Path, num_videos: int, seconds: int, caption_every: float, word_dim: int) -> None:
    rng = np.random.default_rng(0)
    vocab = 5000
    records = []
    for index in range(num_videos):
        starts = np.arange(0, seconds - caption_every, caption_every, dtype=np.float32)
        records.append(
            store.VideoRecord(
                video_id=f"v{index:05d}",
                duration=float(seconds),
                has_audio=True,
                feat_2d=rng.standard_normal((seconds, 2048)).astype(np.float16),
                feat_3d=rng.standard_normal((int(seconds * 1.5), 2048)).astype(np.float16),
                logmel=rng.standard_normal((40, seconds * 100)).astype(np.float16),
                caption_start=starts,
                caption_end=starts + caption_every * 0.9,
                caption_text=["words"] * len(starts),
                caption_token_ids=[rng.integers(0, vocab, 8).astype(np.int32) for _ in starts],
            )
        )
    shard = store.shard_name(0)
    store.write_shard(root / store.SHARD_DIR / shard, records)
    vectors = rng.standard_normal((vocab, word_dim)).astype(np.float32)
    store.write_words(root, np.arange(vocab), [f"w{i}" for i in range(vocab)], vectors)
    store.write_manifest(root, {"shards": [{"name": shard, "video_ids": [r.video_id for r in records]}]})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", help="an existing store (default: write a synthetic one)")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=300, help="synthetic video length")
    parser.add_argument("--caption-every", type=float, default=4.0, help="synthetic caption spacing, seconds")
    parser.add_argument("--word-dim", type=int, default=300)
    parser.add_argument("--batch-videos", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per worker")
    parser.add_argument(
        "--workers", default="0", help="comma-separated loader worker counts to time (0 = in process)"
    )
    parser.add_argument("--keep", help="write the synthetic store here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.store or args.keep or tmp)
        if not args.store:
            synthetic_store(root, args.videos, args.seconds, args.caption_every, args.word_dim)
        options = ClipOptions()  # the spec's 32 clips, 1000 frames, 20 words
        index = build_index(root)
        words = read_words(root)

        # stage split on a few videos: Parquet read + decode vs clip cutting
        read_s = cut_s = 0.0
        sample = min(8, len(index))
        for position in range(sample):
            start = time.perf_counter()
            record = read_shard_video(
                index.shard_paths[index.shard_of[position]], int(index.row_group_of[position]), DECODE_FIELDS
            )
            middle = time.perf_counter()
            sample_video_clips(record, words, options, np.random.default_rng(position))
            read_s, cut_s = read_s + middle - start, cut_s + time.perf_counter() - middle
        print(
            f"per video: read+decode {1e3 * read_s / sample:.1f} ms, cut 32 clips {1e3 * cut_s / sample:.1f} ms"
        )

        for num_workers in [int(n) for n in args.workers.split(",")]:
            time_loader(root, options, index, args.batch_videos, num_workers, args.batches)


def time_loader(
    root: Path, options: ClipOptions, index, batch_videos: int, num_workers: int, batches: int
) -> None:
    """Clips per second of a TrainLoader, timed after its first batch (worker start-up excluded)."""
    loader = TrainLoader(root, options, batch_videos, seed=1, num_workers=num_workers, index=index)
    wanted = min(loader.batches_per_epoch, 1 + batches * max(1, num_workers))
    count, start = 0, time.perf_counter()
    for _ in loader:
        count += 1
        if count == 1:
            start = time.perf_counter()
        if count == wanted:
            break
    elapsed = time.perf_counter() - start
    clips = (count - 1) * batch_videos * options.num_clips
    rate = clips / elapsed
    cores = max(1, num_workers)
    print(
        f"loader, {num_workers} workers: {clips} clips in {elapsed:.2f} s = {rate:,.0f} clips/s, {rate / cores:,.0f} per core"
    )
    for name, target in GPU_TARGETS.items():
        print(f"  cores to feed {name}: {int(np.ceil(target / (rate / cores)))}")


if __name__ == "__main__":
    main()
