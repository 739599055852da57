"""``mcn store info|verify|export``: inspect, check and export a feature store written by ``mcn extract``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mcn import store
from mcn.errors import MCNError
from mcn.pipeline.writer import EXTRACTION, latest_failures

DESCRIPTION = "Inspect (info), check (verify), export (export) and convert (migrate) a feature store."
EPILOG = """\
examples:
  mcn store info store/
  mcn store verify store/                      # exit status 1 when anything is wrong
  mcn store export store/ VIDEO_ID --out video.npz
  mcn store export store/ VIDEO_ID --layout reference --out features/   # VIDEO_ID_2d.npz, VIDEO_ID_3d.npz
  mcn store migrate old-store/ new-store/      # format 1 -> 2; rerun to resume
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="counts, hours, sizes, failures by reason")
    info.add_argument("store")
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    verify = commands.add_parser("verify", help="read every shard and check the manifest against them")
    verify.add_argument("store")
    export = commands.add_parser("export", help="one video's features and captions as .npz")
    export.add_argument("store")
    export.add_argument("video_id")
    export.add_argument(
        "--out", required=True, help="the .npz file (layout npz) or a folder (layout reference)"
    )
    export.add_argument(
        "--layout",
        choices=["npz", "reference"],
        default="npz",
        help="npz: one file with every array; reference: <id>_2d.npz and <id>_3d.npz with key 'features'",
    )
    add_migrate_arguments(commands)


def run(args: argparse.Namespace) -> int:
    return {"info": _info, "verify": _verify, "export": _export, "migrate": _migrate}[args.command](args)


def store_info(root: str | Path) -> dict:
    """Figures of a store, finished or not (an unfinished one is read from its shard files)."""
    root = Path(root)
    if not root.is_dir():
        raise MCNError(f"store {root} does not exist")
    manifest_path = root / store.MANIFEST
    finished = manifest_path.exists()
    shards = store.list_shards(root)
    if not (finished or shards or (root / EXTRACTION).exists()):
        raise MCNError(
            f"{root} is not a feature store (no {store.MANIFEST}, no shards); make one with `mcn extract`"
        )
    num_videos, seconds = 0, 0.0
    for path in shards:
        durations = pq.read_table(path, columns=["duration"]).column("duration").to_pylist()
        num_videos += len(durations)
        seconds += sum(durations)
    failures = list(latest_failures(root).values())
    manifest = json.loads(manifest_path.read_text()) if finished else {}
    return {
        "store": str(root),
        "finished": finished,
        "videos": num_videos,
        "hours": round(seconds / 3600, 4),
        "shards": len(shards),
        "shard_bytes": sum(p.stat().st_size for p in shards),
        "total_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        "failures": len(failures),
        "failures_by_reason": dict(Counter(f["reason"] for f in failures)),
        "extractors": {
            k: v.get("model")
            for k, v in manifest.get("extractors", {}).items()
            if isinstance(v, dict) and "model" in v
        },
        "vocabulary": manifest.get("vocabulary"),
    }


def _info(args: argparse.Namespace) -> int:
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    state = (
        "finished"
        if info["finished"]
        else "UNFINISHED (no manifest.json: rerun `mcn extract` to complete it)"
    )
    print(f"store {info['store']}: {state}")
    print(
        f"  videos {info['videos']} ({info['hours']:.3f} h) in {info['shards']} shards, {info['shard_bytes'] / 1e6:.1f} MB "
        f"(store {info['total_bytes'] / 1e6:.1f} MB)"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(info["failures_by_reason"].items())) or "none"
    print(f"  failures {info['failures']}: {reasons}")
    if info["extractors"]:
        print("  models " + ", ".join(f"{k}={v}" for k, v in info["extractors"].items()))
    if info["vocabulary"]:
        print(f"  vocabulary {info['vocabulary'].get('word_vectors')} (dim {info['vocabulary'].get('dim')})")
    return 0


def verify_store(root: str | Path) -> list[str]:
    """Every problem found (empty = the store is sound): shards readable, manifest consistent, no duplicates."""
    reader = store.StoreReader(root)
    problems: list[str] = []
    seen: dict[str, str] = {}
    used_ids: set[int] = set()
    listed = {shard["name"] for shard in reader.manifest["shards"]}
    for path in store.list_shards(root):
        if path.name not in listed:
            problems.append(f"{path.name} is on disk but not in the manifest")
    for shard in reader.manifest["shards"]:
        path = reader.root / store.SHARD_DIR / shard["name"]
        if not path.exists():
            problems.append(f"{shard['name']} is in the manifest but missing")
            continue
        try:
            ids = []
            for record in store.iter_shard(path):
                ids.append(record.video_id)
                used_ids.update(int(i) for ids_ in record.caption_token_ids for i in ids_)
                problems += [f"{shard['name']}: {record.video_id}: {p}" for p in _record_problems(record)]
        except Exception as error:  # any read error is a finding, not a crash
            problems.append(f"{shard['name']} is unreadable: {type(error).__name__}: {error}")
            continue
        if ids != shard["video_ids"]:
            problems.append(f"{shard['name']}: video ids differ from the manifest's")
        for video_id in ids:
            if video_id in seen:
                problems.append(f"video {video_id!r} is in both {seen[video_id]} and {shard['name']}")
            seen[video_id] = shard["name"]
    counts = reader.manifest.get("counts", {})
    if counts.get("videos") != len(seen):
        problems.append(f"manifest counts {counts.get('videos')} videos, the shards hold {len(seen)}")
    failures = reader.failures()
    if counts.get("failures") != len(failures):
        problems.append(
            f"manifest counts {counts.get('failures')} failures, failures.parquet holds {len(failures)}"
        )
    failed_ids = [f["video_id"] for f in failures]
    problems += [f"video {v!r} is both in a shard and in the failures" for v in failed_ids if v in seen]
    problems += [f"video {v!r} is twice in the failures" for v, n in Counter(failed_ids).items() if n > 1]
    try:
        missing = used_ids - set(reader.words.token_ids.tolist())
        if missing:
            problems.append(f"{len(missing)} token ids used by captions are missing from {store.WORDS}")
    except MCNError as error:
        problems.append(str(error))
    return problems


def _record_problems(record: store.VideoRecord) -> list[str]:
    problems = []
    for name in store.ARRAY_COLUMNS:
        array = getattr(record, name)
        if array is not None and array.size and not np.isfinite(array.astype(np.float32)).all():
            problems.append(f"{name} has non-finite values")
    if record.caption_start is not None and np.any(record.caption_end < record.caption_start):
        problems.append("a caption ends before it starts")
    return problems


def _verify(args: argparse.Namespace) -> int:
    problems = verify_store(args.store)
    for problem in problems:
        print(f"problem: {problem}")
    reader = store.StoreReader(args.store)
    print(
        f"{args.store}: {'OK' if not problems else f'{len(problems)} problems'} "
        f"({len(reader)} videos, {len(reader.shard_paths)} shards)"
    )
    return 0 if not problems else 1


def export_video(root: str | Path, video_id: str, out: str | Path, layout: str = "npz") -> list[Path]:
    """Write one video's arrays; returns the files written."""
    record = store.StoreReader(root).read(video_id)
    out = Path(out)
    if layout == "reference":
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{video_id}_2d.npz", out / f"{video_id}_3d.npz"]
        np.savez(paths[0], features=record.feat_2d)
        np.savez(paths[1], features=record.feat_3d)
        return paths
    if out.suffix != ".npz":
        raise MCNError(f"--out {out} must end in .npz (or use --layout reference with a folder)")
    out.parent.mkdir(parents=True, exist_ok=True)
    token_ids = record.caption_token_ids or []
    np.savez(
        out,
        feat_2d=record.feat_2d,
        feat_3d=record.feat_3d,
        logmel=record.logmel,
        caption_start=record.caption_start,
        caption_end=record.caption_end,
        caption_text=np.array(record.caption_text or [], dtype=str),
        caption_token_ids=np.concatenate(token_ids).astype(np.int32) if token_ids else np.zeros(0, np.int32),
        caption_token_offsets=np.cumsum([0] + [len(t) for t in token_ids]).astype(np.int64),
        duration=np.float64(record.duration),
    )
    return [out]


def _export(args: argparse.Namespace) -> int:
    for path in export_video(args.store, args.video_id, args.out, args.layout):
        print(path)
    return 0


def add_migrate_arguments(commands: argparse._SubParsersAction) -> None:
    migrate = commands.add_parser(
        "migrate", help="convert a format-1 store into a new format-2 store (rerun to resume)"
    )
    migrate.add_argument("old", help="the finished format-1 store")
    migrate.add_argument("new", help="where the format-2 store goes (a folder or an object-store URL)")


def _migrate(args: argparse.Namespace) -> int:
    done = store.migrate_store(args.old, args.new)
    print(
        f"{args.new}: store format {store.LATEST_FORMAT_VERSION} ({done['shards_converted']} shards converted, "
        f"{done['shards_kept']} already there, {done['files_copied']} other files copied)"
    )
    return 0
