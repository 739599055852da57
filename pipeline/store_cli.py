"""``mcn store info|verify|repair|export|copy|migrate``: inspect, check, repair, export, copy and convert a
feature store written by ``mcn extract``.

``info``, ``verify``, ``export`` and ``copy`` read a store in a local folder or at an object-store URL
(:mod:`mcn.storage`); ``repair`` works in place on either.

``info`` and ``verify`` read a store as it is, finished or not, damaged or not: damage is reported, never a crash.
``verify`` reads every byte and names the command that repairs what it found; ``repair`` moves the damaged files
into ``quarantine/`` so that rerunning the extraction command extracts their videos again.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mcn import storage, store
from mcn.errors import MCNError
from mcn.pipeline.inputs import video_id_problem
from mcn.pipeline.writer import (
    CONFIG,
    EXTRACTION,
    FOLDERS,
    LOCK,
    MARKER,
    QUARANTINE,
    StoreScan,
    check_store_folders,
    lock_store,
    quarantine,
    remove_manifest,
    scan_store,
)
from mcn.storage import StorePath

DESCRIPTION = (
    "Inspect (info), check (verify), repair (repair), export (export), copy (copy) and convert (migrate) a "
    "feature store."
)
EPILOG = """\
examples:
  mcn store info store/
  mcn store verify store/                      # exit status 1 when anything is wrong
  mcn store repair store/                      # damaged files -> store/quarantine/; then rerun mcn extract
  mcn store export store/ VIDEO_ID --out video.npz
  mcn store export store/ VIDEO_ID --layout reference --out features/   # VIDEO_ID_2d.npz, VIDEO_ID_3d.npz
  mcn store copy store/ s3://bucket/store      # publish a finished store; then mcn train --store s3://...
  mcn store migrate old-store/ new-store/      # format 1 -> 2; rerun to resume
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="counts, hours, sizes, failures by reason, damaged files")
    info.add_argument("store")
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    verify = commands.add_parser("verify", help="read every shard and check the manifest against them")
    verify.add_argument("store")
    repair = commands.add_parser(
        "repair",
        help="move damaged files into quarantine/ (rerun mcn extract afterwards to refill the store)",
    )
    repair.add_argument("store")
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
    copy = commands.add_parser(
        "copy", help="copy a finished store to a new folder or object-store URL (the manifest last)"
    )
    copy.add_argument("source")
    copy.add_argument("target", help="a new folder or URL, e.g. s3://bucket/store")
    add_migrate_arguments(commands)


def run(args: argparse.Namespace) -> int:
    commands = {
        "info": _info,
        "verify": _verify,
        "repair": _repair,
        "export": _export,
        "copy": _copy,
        "migrate": _migrate,
    }
    return commands[args.command](args)


def _store_root(root: StorePath) -> StorePath:
    """``root`` (a folder or an object-store URL) if it is a store (finished or not), else a one-line error."""
    root = storage.join(root)
    if not storage.is_dir(root):
        raise MCNError(f"store {root} does not exist")
    markers = (MARKER, store.MANIFEST, EXTRACTION)
    if not (any(storage.lexists(storage.join(root, name)) for name in markers) or store.list_shards(root)):
        raise MCNError(
            f"{root} is not a feature store (no {store.MANIFEST}, no shards); make one with `mcn extract`"
        )
    return root


def _live_failures(scan: StoreScan) -> list[dict]:
    """The latest failure of every video that is in no healthy shard: what the failures table holds."""
    done = scan.done_ids
    return [row for video_id, row in scan.failures.items() if video_id not in done]


def store_info(root: StorePath) -> dict:
    """Figures of a store, finished or not, read from its files (damaged ones are listed, not read)."""
    root = _store_root(root)
    scan = scan_store(root)
    failures = _live_failures(scan)
    manifest = scan.manifest or {}
    return {
        "store": str(root),
        "finished": scan.manifest is not None,
        "videos": len(scan.done_ids),
        "hours": round(sum(sum(index.durations) for index in scan.shards.values()) / 3600, 4),
        "shards": len(scan.shards),
        "shard_bytes": sum(storage.size(path) for path in scan.shards),
        "total_bytes": storage.total_bytes(root),
        "failures": len(failures),
        "failures_by_reason": dict(sorted(Counter(f["reason"] for f in failures).items())),
        "damaged": {
            storage.relative(p, root): reason for p, reason in sorted(scan.damaged.items(), key=_by_name)
        },
        "quarantine": storage.list_names(storage.join(root, QUARANTINE)),
        "extractors": {
            k: v.get("model")
            for k, v in manifest.get("extractors", {}).items()
            if isinstance(v, dict) and "model" in v
        },
        "vocabulary": manifest.get("vocabulary"),
    }


def _by_name(item: tuple[StorePath, str]) -> str:
    return str(item[0])


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
    for name, reason in info["damaged"].items():
        print(
            f"  DAMAGED {name}: {reason} (rerun `mcn extract` to move it aside and extract its videos again)"
        )
    if info["quarantine"]:
        print(f"  quarantine: {', '.join(info['quarantine'])} (files moved aside by earlier repairs)")
    if info["extractors"]:
        print("  models " + ", ".join(f"{k}={v}" for k, v in info["extractors"].items()))
    if info["vocabulary"]:
        print(f"  vocabulary {info['vocabulary'].get('word_vectors')} (dim {info['vocabulary'].get('dim')})")
    return 0


def check_store(root: StorePath) -> tuple[list[str], dict[StorePath, str]]:
    """(every problem found, the damaged files among them); empty lists = the store is sound.

    Reads every byte of every shard (a damaged feature page is found too), checks the manifest against the
    shards, the failures table against both, and the word table against the captions.
    """
    root = _store_root(root)
    scan = scan_store(root)
    damaged = dict(scan.damaged)
    problems: list[str] = []
    used_ids: set[int] = set()
    for path in scan.shards:
        try:
            found = []
            for record in store.iter_shard(path):
                used_ids.update(int(i) for ids_ in record.caption_token_ids for i in ids_)
                found += [f"{storage.name(path)}: {record.video_id}: {p}" for p in _record_problems(record)]
        except Exception as error:  # any read error is a finding, not a crash
            damaged[path] = f"is damaged inside ({type(error).__name__}: {str(error)[:200]})"
            continue
        if found:  # its videos must be extracted again, so the shard goes too
            damaged[path] = f"holds invalid values ({len(found)} problems listed below)"
            problems += found
    problems = [
        f"{storage.relative(p, root)} {reason}" for p, reason in sorted(damaged.items(), key=_by_name)
    ] + problems
    healthy = {storage.name(p): index.video_ids for p, index in scan.shards.items() if p not in damaged}
    manifest = scan.manifest
    if manifest is None:
        if storage.join(root, store.MANIFEST) not in damaged:
            problems.append(f"the store is unfinished (no {store.MANIFEST})")
        return problems, damaged
    listed = {shard["name"]: shard["video_ids"] for shard in manifest["shards"]}
    problems += [f"{name} is on disk but not in the manifest" for name in healthy if name not in listed]
    for name, video_ids in listed.items():
        if name not in healthy and storage.join(root, store.SHARD_DIR, name) not in damaged:
            problems.append(f"{name} is in the manifest but missing")
        elif name in healthy and healthy[name] != video_ids:
            problems.append(f"{name}: video ids differ from the manifest's")
    num_videos = len(scan.done_ids)
    counts = manifest.get("counts", {})
    if counts.get("videos") != num_videos:
        problems.append(f"manifest counts {counts.get('videos')} videos, the shards hold {num_videos}")
    failures_damaged = storage.join(root, store.FAILURES) in damaged
    table = [] if failures_damaged else store.read_failures(root)
    if not failures_damaged and counts.get("failures") != len(table):
        problems.append(
            f"manifest counts {counts.get('failures')} failures, {store.FAILURES} holds {len(table)}"
        )
    failed_ids = [f["video_id"] for f in table]
    problems += [
        f"video {v!r} is both in a shard and in the failures" for v in failed_ids if v in scan.done_ids
    ]
    problems += [f"video {v!r} is twice in the failures" for v, n in Counter(failed_ids).items() if n > 1]
    try:
        missing = used_ids - set(store.read_words(root).token_ids.tolist())
        if missing:
            problems.append(f"{len(missing)} token ids used by captions are missing from {store.WORDS}")
    except MCNError as error:
        problems.append(str(error))
    return problems, damaged


def verify_store(root: StorePath) -> list[str]:
    """Every problem found (empty = the store is sound); see :func:`check_store`."""
    return check_store(root)[0]


def repair_hint(root: StorePath, damaged: dict[StorePath, str]) -> str:
    """The commands that repair a store with problems (``damaged``: files that must be moved aside)."""
    rerun = f"rerun the `mcn extract` command that made the store{_made_from(root)}"
    links = [name for name in (storage.relative(p, root) for p in damaged) if name in (*FOLDERS, LOCK)]
    if links:
        return f"repair: fix {', '.join(links)} as said above, then {rerun}"
    if not damaged:
        return f"repair: {rerun}; it rewrites the manifest, the failures table and the words from the shards"
    return (
        f"repair: `mcn store repair {root}` moves the {len(damaged)} damaged files into "
        f"{storage.join(root, QUARANTINE)}/, then {rerun} to extract their videos again"
    )


def _made_from(root: StorePath) -> str:
    path = storage.join(root, CONFIG)
    try:
        with store.open_regular(path) as f:
            config = json.loads(f.read(1 << 20).decode("utf-8"))
        return f" (input {config['input']}; every setting is in {path})"
    except (OSError, ValueError, KeyError, TypeError, store.StoreDamage):
        return ""


def _verify(args: argparse.Namespace) -> int:
    problems, damaged = check_store(args.store)
    for problem in problems:
        print(f"problem: {problem}")
    info = store_info(args.store)
    print(
        f"{args.store}: {'OK' if not problems else f'{len(problems)} problems'} "
        f"({info['videos']} videos, {info['shards']} shards)"
    )
    if problems:
        print(repair_hint(args.store, damaged))
    return 0 if not problems else 1


def repair_store(root: StorePath) -> tuple[StorePath | None, dict[StorePath, str]]:
    """Move every damaged file (found by reading every byte) into quarantine and mark the store unfinished;
    returns (the quarantine folder or None, what was moved). Takes the store's lock, like a job; a store in a
    bucket is repaired in place (server-side copies into quarantine/, then deletes)."""
    root = _store_root(root)
    storage.check_lockable(storage.join(root, LOCK))
    check_store_folders(root)
    lock = lock_store(root)
    try:
        _, damaged = check_store(root)
        if not damaged:
            return None, {}
        remove_manifest(root, damaged)
        return quarantine(root, damaged), damaged
    finally:
        lock.release()


def _repair(args: argparse.Namespace) -> int:
    folder, damaged = repair_store(args.store)
    if folder is None:
        print(f"{args.store}: no damaged files; `mcn store verify {args.store}` lists any other problem")
        return 0
    for path, reason in sorted(damaged.items(), key=lambda item: str(item[0])):
        print(f"moved {storage.name(path)}: {reason}")
    print(
        f"{len(damaged)} damaged files are in {folder}; the store is unfinished until you rerun the "
        f"`mcn extract` command that made it{_made_from(args.store)}"
    )
    return 0


def _record_problems(record: store.VideoRecord) -> list[str]:
    problems = []
    for name in store.ARRAY_COLUMNS:
        array = getattr(record, name)
        expected = store.FEATURE_SPECS[name]["shape"]
        if array.ndim != len(expected) or any(
            e is not None and e != n for e, n in zip(expected, array.shape)
        ):
            problems.append(f"{name} has shape {list(array.shape)}, expected {expected}")
        elif array.size and not np.isfinite(array.astype(np.float32)).all():
            problems.append(f"{name} has non-finite values")
    if record.caption_start is not None:
        problem = store.caption_problem(record.caption_start, record.caption_end)
        if problem is not None:
            problems.append(problem)
    return problems


def export_video(root: str | Path, video_id: str, out: str | Path, layout: str = "npz") -> list[Path]:
    """Write one video's arrays; returns the files written."""
    problem = video_id_problem(video_id)
    if problem is not None:  # the id becomes part of file names
        raise MCNError(f"{problem}; give the id of a video in the store")
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


def copy_finished_store(source: StorePath, target: StorePath) -> int:
    """Copy a finished store to a place that holds nothing yet; returns the number of files copied. The
    target is a finished store only once its manifest, copied last, is there."""
    source = _store_root(source)
    if store.read_manifest(source) is None:
        raise MCNError(f"{source} is unfinished (no {store.MANIFEST}); rerun its `mcn extract` command first")
    if storage.exists(target):
        raise MCNError(
            f"{target} already exists; give a new folder or URL prefix (delete a copy that was cut short)"
        )
    store.copy_store(source, target)
    return len(storage.list_files(target, recursive=True))


def _copy(args: argparse.Namespace) -> int:
    num_files = copy_finished_store(args.source, args.target)
    print(f"{args.target}: {num_files} files copied; `mcn store verify {args.target}` checks the copy")
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
