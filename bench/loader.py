"""Training-loader throughput: clips per CPU-second, store format 1 next to format 2, local disk next to an object store.

Writes the same synthetic HowTo100M-sized videos as a format-1 and a format-2 store (or reads --store), then
times the loader's work for one batch after another in this process: read one video's row group, decode it,
cut 32 clips, collate (what each DataLoader worker does). Times are CPU seconds of this process, which other
work on a shared machine barely changes, so "clips/s per core" is clips per CPU-second; wall-clock rates are
printed next to them. An object store is reached through mcn.storage (AWS_* variables for s3://).

    python bench/loader.py                                  # 24 synthetic 5-minute videos, formats 1 and 2
    python bench/loader.py --remote s3://bench/loader       # the same two stores also copied to an object store
    python bench/loader.py --store store/ --store s3://bucket/store --batches 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mcn import storage, store
from mcn.train.clips import ClipOptions, sample_video_clips
from mcn.train.data import DECODE_FIELDS, TrainLoader, build_index, collate_videos, epoch_order

GPU_TARGETS = {
    "reference step, one H200 (9,700 clips/s)": 9_700,
    "target step of 4,096 clips in 0.2 s": 19_000,
}


def synthetic_store(
    root: Path, num_videos: int, seconds: int, caption_every: float, word_dim: int, format_version: int
) -> None:
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
    store.write_shard(root / store.SHARD_DIR / shard, records, format_version=format_version)
    vectors = rng.standard_normal((vocab, word_dim)).astype(np.float32)
    store.write_words(root, np.arange(vocab), [f"w{i}" for i in range(vocab)], vectors)
    store.write_manifest(
        root,
        {
            "format_version": format_version,
            "shards": [{"name": shard, "video_ids": [r.video_id for r in records]}],
        },
    )


def captioned_videos(root: storage.StorePath) -> list[tuple[storage.StorePath, int]]:
    """(shard, row group) of every video with captions, in shard order (the training index, for any path)."""
    reader = store.StoreReader(root)
    videos = []
    for path in reader.shard_paths:
        counts = store.shard_caption_counts(path)
        videos += [(path, row_group) for row_group, count in enumerate(counts) if count > 0]
    return videos


def measure(root: storage.StorePath, options: ClipOptions, batch_videos: int, num_batches: int) -> dict:
    """CPU and wall time of the loader's per-batch work: read + decode, clip cutting, collate."""
    videos = captioned_videos(root)
    words = store.read_words(root)
    order = epoch_order(len(videos), seed=1, epoch=0)
    num_batches = min(num_batches, len(videos) // batch_videos)
    read_s = cut_s = 0.0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for batch in range(num_batches):
        items = []
        for position in order[batch * batch_videos : (batch + 1) * batch_videos]:
            start = time.process_time()
            path, row_group = videos[position]
            record = store.read_shard_video(path, row_group, DECODE_FIELDS)
            middle = time.process_time()
            item = sample_video_clips(record, words, options, np.random.default_rng(int(position)))
            item["video_index"] = np.int64(position)
            items.append(item)
            read_s, cut_s = read_s + middle - start, cut_s + time.process_time() - middle
        collate_videos(items)
    cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    num_videos = num_batches * batch_videos
    clips = num_videos * options.num_clips
    shard_bytes = sum(storage.size(p) for p in store.list_shards(root))
    return {
        "format": store.shard_format(videos[0][0]),
        "mb_per_video": shard_bytes / len(store.StoreReader(root)) / 1e6,
        "read_ms": 1e3 * read_s / num_videos,
        "cut_ms": 1e3 * cut_s / num_videos,
        "clips_per_cpu_s": clips / cpu_s,
        "clips_per_wall_s": clips / wall_s,
    }


def time_loader(root: Path, options: ClipOptions, batch_videos: int, num_workers: int, batches: int) -> None:
    """Clips per wall-second of the real TrainLoader with worker processes (a local store), after its first batch."""
    loader = TrainLoader(
        root, options, batch_videos, seed=1, num_workers=num_workers, index=build_index(root)
    )
    wanted = min(loader.batches_per_epoch, 1 + batches * num_workers)
    count, start = 0, time.perf_counter()
    for _ in loader:
        count += 1
        if count == 1:
            start = time.perf_counter()
        if count == wanted:
            break
    rate = (count - 1) * batch_videos * options.num_clips / (time.perf_counter() - start)
    print(
        f"  TrainLoader, {num_workers} workers: {rate:,.0f} clips/s wall, {rate / num_workers:,.0f} per worker"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", action="append", help="an existing store, local or URL (repeatable; default: synthetic)"
    )
    parser.add_argument(
        "--remote", help="also copy the synthetic stores here (an object-store URL) and time them"
    )
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=300, help="synthetic video length")
    parser.add_argument("--caption-every", type=float, default=4.0, help="synthetic caption spacing, seconds")
    parser.add_argument("--word-dim", type=int, default=300)
    parser.add_argument("--batch-videos", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per store")
    parser.add_argument("--repeats", type=int, default=3, help="time every store this often, keep the best")
    parser.add_argument(
        "--workers", default="", help="comma-separated TrainLoader worker counts to time on local stores"
    )
    parser.add_argument("--keep", help="write the synthetic stores under this folder and keep them")
    args = parser.parse_args()

    options = ClipOptions()  # the spec's 32 clips, 1000 frames, 20 words
    with tempfile.TemporaryDirectory() as tmp:
        roots: list[storage.StorePath] = list(args.store or [])
        if not roots:
            folder = Path(args.keep or tmp)
            for version in store.FORMAT_VERSIONS:
                root = folder / f"format{version}"
                synthetic_store(root, args.videos, args.seconds, args.caption_every, args.word_dim, version)
                roots.append(root)
            if args.remote:
                for version in store.FORMAT_VERSIONS:
                    remote = storage.join(args.remote, f"format{version}")
                    store.copy_store(folder / f"format{version}", remote)
                    roots.append(remote)
        print(
            f"{'store':<48} {'format':>6} {'MB/video':>9} {'read+decode':>12} {'cut 32':>8} "
            f"{'clips/CPU-s':>12} {'clips/wall-s':>13}"
        )
        for root in roots:
            runs = [measure(root, options, args.batch_videos, args.batches) for _ in range(args.repeats)]
            best = max(runs, key=lambda r: r["clips_per_cpu_s"])
            print(
                f"{str(root):<48} {best['format']:>6} {best['mb_per_video']:>9.2f} "
                f"{best['read_ms']:>9.1f} ms {best['cut_ms']:>5.1f} ms "
                f"{best['clips_per_cpu_s']:>12,.0f} {max(r['clips_per_wall_s'] for r in runs):>13,.0f}"
            )
            for name, target in GPU_TARGETS.items():
                print(f"  cores to feed {name}: {int(np.ceil(target / best['clips_per_cpu_s']))}")
            if not storage.is_remote(root):
                for num_workers in [int(n) for n in args.workers.split(",") if n.strip()]:
                    time_loader(Path(root), options, args.batch_videos, num_workers, args.batches)


if __name__ == "__main__":
    main()
