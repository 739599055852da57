"""The store side of the extraction job: resume state, shard writing, failure parts, words and manifest.

Progress is nothing but files in STORE, each written atomically (:func:`mcn.storage.atomic_write`: a temporary
name, then rename; in a bucket, an object that appears only when its upload is complete). STORE may be a local
folder or an ``s3://bucket/prefix`` (the writer's lock is then an object created with a conditional write):

- ``.mcn-store``: the marker, written first, that makes the folder a store;
- ``shards/shard-NNNNNN.parquet``: whole videos, self-describing (their ids are in the file), in store format 2
  (or in format 1 when the store already holds format-1 shards: a store keeps one format);
- ``failures/part-*.parquet``: failure records, written as soon as a video fails;
- ``extraction.json``: the identity of the extraction (models, weights and word-vector fingerprints, decoding);
  a rerun with a different identity is refused instead of mixing features.

The folder is the store's alone: ``--out`` must be absent, empty or a store, and nothing in it may be a link
(``shards/``, ``failures/`` and ``.lock`` are refused, other links are treated as damage).

:meth:`StoreWriter.open` changes nothing before it has read and checked what is on disk (:func:`scan_store`).
Only then does it remove the old ``manifest.json`` (a store without one is unfinished), move damaged files (a torn
shard or failures table, a link, a shard repeating another's video) into ``quarantine/<time>/``, and delete its
own stray temporary files. Videos of a quarantined file are in no healthy shard, so they are extracted again;
healthy shards are never touched. ``finish`` folds the failure parts into ``failures.parquet`` (the latest record
per video, minus videos that have since succeeded), then writes ``words.parquet`` and the manifest last.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mcn import __version__, storage, store
from mcn.configs import config_to_dict, write_json_atomic
from mcn.errors import MCNError
from mcn.pipeline.config import PipelineConfig, ShardConfig

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

MARKER = ".mcn-store"
EXTRACTION = "extraction.json"
SUMMARY = "summary.json"
CONFIG = "config.json"
FAILURE_PARTS = "failures"
QUARANTINE = "quarantine"
LOCK = store.LOCK
BENCHMARKS = "benchmarks"  # `mcn eval prepare` keeps its benchmark definitions next to the store's files
FOLDERS = (store.SHARD_DIR, FAILURE_PARTS, QUARANTINE)
# Files of the store's own that it rewrites: anything else in their place is damage, moved aside.
REWRITTEN = (store.MANIFEST, SUMMARY, CONFIG, store.WORDS)
FAILURE_SCHEMA = pa.schema([(name, pa.string()) for name in store.FAILURE_COLUMNS])


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(path: str | None) -> str:
    """sha256 of a weights file, or "random-init" for a model built without weights."""
    return "random-init" if path is None else sha256_file(path)


def record_nbytes(record: store.VideoRecord) -> int:
    """Uncompressed size of a record's arrays: an upper bound of what it adds to a shard."""
    arrays = (record.feat_2d, record.feat_3d, record.logmel)
    return sum(a.nbytes for a in arrays if a is not None) + sum(len(t) for t in record.caption_text or []) * 5


# ---- the folder ---------------------------------------------------------------------------------------------
def claim_store_folder(root: storage.StorePath) -> None:
    """Make ``root`` a store: create it, or accept an empty folder (an empty bucket prefix) or a store; the
    marker is written first. A folder holding anything else is refused untouched, so that no user file is
    deleted or overwritten."""
    remote = storage.is_remote(root)
    try:
        if storage.is_file(root):
            raise MCNError(f"--out {root} is a file; give a folder for the store")
        if not remote:
            Path(root).mkdir(parents=True, exist_ok=True)
        marker = storage.join(root, MARKER)
        if storage.lexists(marker):
            _check_regular(marker)
            return
        entries = storage.list_names(root)
        if entries and not _holds_a_store(root, entries):
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise MCNError(
                f"--out {root} is neither empty nor an mcn store (it holds {shown}); nothing was changed: "
                "give a new or empty folder, or the folder of an existing store"
            )
        write_json_atomic(marker, {"mcn_store": True, "created_by": f"mcn {__version__}"})
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        reason = error.strerror or " ".join(str(error).split())[:300]
        raise MCNError(f"cannot write to the store folder {root} ({reason}); give another --out") from None


def _holds_a_store(root: storage.StorePath, entries: list[str]) -> bool:
    """A store made before the marker existed: its identity or manifest, or only the empty folders and the
    lock file that such a store created before anything else."""
    if set(entries) <= {LOCK, store.SHARD_DIR, FAILURE_PARTS, BENCHMARKS}:
        folders = [storage.join(root, name) for name in (store.SHARD_DIR, FAILURE_PARTS) if name in entries]
        return all(
            storage.is_dir(p) and not storage.is_link(p) and not storage.list_names(p) for p in folders
        )
    for name, keys in ((EXTRACTION, {"model_2d", "decode"}), (store.MANIFEST, {"format_version", "shards"})):
        try:
            with store.open_regular(storage.join(root, name)) as f:
                data = json.loads(f.read(1 << 20).decode("utf-8"))
        except (FileNotFoundError, store.StoreDamage, ValueError):
            continue
        if isinstance(data, dict) and keys <= set(data):
            return True
    return False


def _check_regular(path: storage.StorePath) -> None:
    with store.open_regular(path):
        pass


def check_store_folders(root: storage.StorePath) -> None:
    """``shards/``, ``failures/`` and ``quarantine/`` are real folders (created when missing), never links.
    A bucket has no folders to make or check."""
    if storage.is_remote(root):
        return
    for name in FOLDERS:
        path = Path(root) / name
        if path.is_symlink():
            raise MCNError(
                f"{path} is a symbolic link; a store holds no links (the job would write where it points): "
                "replace it with a plain folder holding the same files"
            )
        if os.path.lexists(path) and not path.is_dir():
            raise MCNError(f"{path} is not a folder; move it away and rerun")
        path.mkdir(exist_ok=True)


def lock_store(root: storage.StorePath) -> storage.FileLock | storage.ObjectLock:
    """Take the store's exclusive lock (held until it is released); a local lock file is never followed."""
    return storage.acquire_lock(
        storage.join(root, LOCK),
        f"another extraction job is writing to {root}; wait for it or use another --out",
    )


def read_identity(root: storage.StorePath) -> dict | None:
    """extraction.json, None when absent; damaged raises :class:`mcn.store.StoreDamage`."""
    path = storage.join(root, EXTRACTION)
    try:
        with store.open_regular(path) as f:
            identity = json.loads(f.read(1 << 20).decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise store.StoreDamage(path, f"is damaged ({type(error).__name__})") from None
    if not isinstance(identity, dict):
        raise store.StoreDamage(path, "is damaged (not a JSON object)")
    return identity


# ---- what is on disk ----------------------------------------------------------------------------------------
@dataclass
class StoreScan:
    """What a store holds, read and checked without changing anything."""

    shards: dict[storage.StorePath, store.ShardIndex] = field(default_factory=dict)  # healthy shards
    failures: dict[str, dict] = field(default_factory=dict)  # latest failure record per video
    damaged: dict[storage.StorePath, str] = field(default_factory=dict)  # file -> why it is damaged
    manifest: dict | None = None  # the previous manifest, when there is a readable one
    identity: dict | None = None  # extraction.json, when there is a readable one
    next_shard: int = 0  # after the highest shard number on disk, damaged shards included

    @property
    def done_ids(self) -> set[str]:
        return {video_id for index in self.shards.values() for video_id in index.video_ids}

    def lost_video_ids(self) -> list[str]:
        """Videos the previous manifest placed in a damaged shard (they are extracted again)."""
        if self.manifest is None:
            return []
        done, lost = self.done_ids, []
        for shard in self.manifest["shards"]:
            lost += [v for v in shard["video_ids"] if v not in done and isinstance(v, str)]
        return sorted(set(lost))


def scan_store(root: storage.StorePath) -> StoreScan:
    """Read and check every shard (whole files, not their feature bytes), the failure tables, the manifest and
    the identity; anything damaged is listed in ``damaged``, nothing is changed. ``root`` may be a URL."""
    root = storage.join(root)
    store.forget_open_shards(root)  # read every shard as the bucket holds it now
    scan = StoreScan()
    for path in [storage.join(root, name) for name in FOLDERS]:
        if storage.is_link(path):
            scan.damaged[path] = "is a symbolic link (a store holds no links): replace it with a plain folder"
    if storage.is_link(storage.join(root, LOCK)):
        scan.damaged[storage.join(root, LOCK)] = "is a symbolic link (a store holds no links): remove it"
    owner: dict[str, storage.StorePath] = {}
    numbers = []
    shard_dir = storage.join(root, store.SHARD_DIR)
    shards = [] if shard_dir in scan.damaged else store.list_shards(root)
    for path in shards:
        numbers.append(store.shard_number(path))
        try:
            index = store.read_shard_index(path)
        except store.StoreDamage as damage:
            scan.damaged[path] = damage.reason
            continue
        repeated = next((v for v in index.video_ids if v in owner), None)
        if repeated is not None:
            scan.damaged[path] = f"repeats video {repeated!r} of {storage.name(owner[repeated])}"
            continue
        owner.update(dict.fromkeys(index.video_ids, path))
        scan.shards[path] = index
    scan.next_shard = max(numbers) + 1 if numbers else 0
    parts_dir = storage.join(root, FAILURE_PARTS)
    parts = (
        []
        if parts_dir in scan.damaged or not storage.is_dir(parts_dir)
        else [storage.join(parts_dir, n) for n in storage.list_names(parts_dir) if _is_part_name(n)]
    )
    for path in [storage.join(root, store.FAILURES), *parts]:
        if not storage.lexists(path):
            continue
        try:
            scan.failures.update({row["video_id"]: row for row in store.read_failure_table(path)})
        except store.StoreDamage as damage:
            scan.damaged[path] = damage.reason
    try:
        scan.manifest = store.read_manifest(root)
    except store.StoreDamage as damage:
        scan.damaged[storage.join(root, store.MANIFEST)] = damage.reason
    try:
        scan.identity = read_identity(root)
    except store.StoreDamage as damage:
        scan.damaged[storage.join(root, EXTRACTION)] = damage.reason
    for name in REWRITTEN:
        path = storage.join(root, name)
        if (
            name != store.MANIFEST
            and storage.lexists(path)
            and not (storage.is_file(path) and not storage.is_link(path))
        ):
            scan.damaged[path] = "is not a regular file"
    return scan


def _is_part_name(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def quarantine(root: storage.StorePath, damaged: dict[storage.StorePath, str]) -> storage.StorePath | None:
    """Move damaged files into a new ``quarantine/<time>-<suffix>/`` (same relative paths), with ``why.json``;
    returns the folder (None when there is nothing to move). A local move renames the entry itself: a link is
    moved, not followed."""
    if not damaged:
        return None
    folder = storage.join(root, QUARANTINE, f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}")
    why = {}
    for path in sorted(damaged, key=str):
        relative = storage.relative(path, root)
        target = storage.join(folder, *relative.split("/"))
        if not storage.is_remote(root):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        storage.move(path, target)
        why[relative] = damaged[path]
    write_json_atomic(storage.join(folder, "why.json"), why)
    return folder


def _remove_strays(root: storage.StorePath) -> None:
    """Temporary files of an interrupted job (only names this store's writers use; nothing else is deleted).
    In a bucket an interrupted upload leaves no object."""
    if storage.is_remote(root):
        return
    root = Path(root)
    own = (MARKER, EXTRACTION, SUMMARY, CONFIG, store.MANIFEST, store.WORDS, store.FAILURES)
    storage.remove_temporaries(root / store.SHARD_DIR)
    storage.remove_temporaries(root / FAILURE_PARTS)
    strays = [
        *(root / FAILURE_PARTS).glob(".part-*.parquet*.tmp"),  # named so by earlier versions
        *(p for name in own for p in root.glob(f".{name}.*tmp*")),
    ]
    for stray in strays:
        if stray.is_symlink() or stray.is_file():
            stray.unlink(missing_ok=True)


def remove_manifest(root: storage.StorePath, damaged: dict[storage.StorePath, str]) -> None:
    """Mark the store unfinished: its manifest goes (unless it is damaged, and so goes to quarantine)."""
    manifest = storage.join(root, store.MANIFEST)
    if manifest not in damaged and storage.lexists(manifest):
        storage.remove(manifest)


def write_table_atomic(table: pa.Table, path: storage.StorePath) -> None:
    """Write a Parquet table that appears at ``path`` complete or not at all (never through a link)."""
    with storage.atomic_write(path) as file:
        pq.write_table(table, file)


class StoreWriter:
    """Owns STORE for the length of one job (an exclusive lock keeps a second job out).

    ``open`` claims, locks and reads the store without changing it; ``commit`` then records the identity,
    moves damaged files aside and marks the store unfinished. Between the two the job may still refuse to run
    (a source conflict, an unreachable cluster) and leave the store as it was.
    """

    def __init__(self, root: storage.StorePath, identity: dict, shards: ShardConfig):
        self.root = storage.join(root)
        self.identity = identity
        self.limits = shards
        self.shard_dir = storage.join(self.root, store.SHARD_DIR)
        self.failure_dir = storage.join(self.root, FAILURE_PARTS)
        self._lock: storage.FileLock | storage.ObjectLock | None = None
        self._buffer: list[store.VideoRecord] = []
        self._buffer_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: list[Future] = []
        self._next_shard = 0
        self.format_version = store.LATEST_FORMAT_VERSION  # of the shards this job writes
        self.write_seconds = 0.0
        self.scan = StoreScan()
        self.done_ids: set[str] = set()
        self.failures: dict[str, dict] = {}
        self.sources: dict[str, dict] = {}  # video id -> what to record in its extra about its source file
        self.quarantined: dict | None = None  # for the summary: folder, files and why, videos extracted again
        self.summary: dict = {}  # as finish() wrote it

    # ---- start ----------------------------------------------------------------------------------------------
    def open(self, commit: bool = True) -> None:
        """Claim and lock STORE, check the extraction identity and read what is on disk (changing nothing);
        with ``commit`` also :meth:`commit`."""
        storage.check_lockable(storage.join(self.root, LOCK))  # before anything is written
        claim_store_folder(self.root)
        check_store_folders(self.root)
        self._lock = lock_store(self.root)
        try:
            self._read_state()
        except BaseException:
            self.close()
            raise
        if commit:
            self.commit()

    def _read_state(self) -> None:
        self.scan = scan_store(self.root)
        recorded = self.scan.identity
        shard_identities = [
            index.extraction for index in self.scan.shards.values() if index.extraction is not None
        ]
        for existing in [recorded] if recorded is not None else shard_identities:
            if existing != self.identity:
                changed = sorted(
                    k for k in set(existing) | set(self.identity) if existing.get(k) != self.identity.get(k)
                )
                raise MCNError(
                    f"{self.root} was extracted with a different config ({', '.join(changed)} differ); "
                    "use a new --out folder, or the original models, weights and word vectors"
                )
        self.done_ids = self.scan.done_ids
        self.failures = dict(self.scan.failures)
        self._next_shard = self.scan.next_shard
        # A store keeps the format it was started in (`mcn store migrate` converts it); a new one gets the latest.
        formats = {index.format_version for index in self.scan.shards.values()}
        self.format_version = formats.pop() if len(formats) == 1 else store.LATEST_FORMAT_VERSION

    def commit(self) -> None:
        """The first changes: the manifest goes (the store is unfinished from here on), damaged files move into
        quarantine, the identity is recorded, stray temporary files are deleted."""
        remove_manifest(self.root, self.scan.damaged)
        lost = self.scan.lost_video_ids()
        folder = quarantine(self.root, self.scan.damaged)
        if folder is not None:
            self.quarantined = {
                "folder": str(folder),
                "files": {
                    storage.relative(p, self.root): r for p, r in sorted(self.scan.damaged.items(), key=str)
                },
                "videos_extracted_again": len(lost),
            }
        if self.scan.identity is None:
            write_json_atomic(storage.join(self.root, EXTRACTION), self.identity)
        _remove_strays(self.root)

    def source_records(self) -> dict[str, tuple[str, dict]]:
        """video id -> (source path, extra) of every video in a healthy shard."""
        return {
            video_id: (path, extra)
            for index in self.scan.shards.values()
            for video_id, path, extra in zip(index.video_ids, index.source_paths, index.extras, strict=True)
        }

    # ---- during the job -------------------------------------------------------------------------------------
    def record_failures(self, rows: list[dict]) -> None:
        """Persist failure records at once (one small part file), so a crash never forgets them."""
        if not rows:
            return
        rows = [{name: str(row.get(name, "")) for name in FAILURE_SCHEMA.names} for row in rows]
        name = f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
        self.check_lock()
        write_table_atomic(
            pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), storage.join(self.failure_dir, name)
        )
        self.failures.update({row["video_id"]: row for row in rows})

    def add(self, record: store.VideoRecord) -> None:
        """Buffer a finished video; a full buffer becomes the next shard (written in a background thread)."""
        if record.video_id in self.sources:
            record.extra = {**record.extra, **self.sources[record.video_id]}
        nbytes = record_nbytes(record)
        if self._buffer and self._buffer_bytes + nbytes > self.limits.max_bytes:
            self.flush()
        self._buffer.append(record)
        self._buffer_bytes += nbytes
        if len(self._buffer) >= self.limits.max_videos:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        path = storage.join(self.shard_dir, store.shard_name(self._next_shard))
        self._next_shard += 1
        records, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self._pending.append(self._pool.submit(self._write, path, records))

    def _write(self, path: storage.StorePath, records: list[store.VideoRecord]) -> None:
        self.check_lock()
        start = time.perf_counter()
        ids = [r.video_id for r in records]
        metadata = {"video_ids": ids, "extraction": self.identity}
        store.write_shard(path, records, metadata, format_version=self.format_version)
        self.done_ids.update(ids)
        self.write_seconds += time.perf_counter() - start

    def check_lock(self) -> None:
        """Raise when the store's lock was lost (an object lock taken over by another writer)."""
        if self._lock is not None:
            self._lock.check()

    def wait(self) -> None:
        """Block until every submitted shard is on disk (re-raises a write error)."""
        for future in self._pending:
            future.result()
        self._pending = []

    # ---- end ------------------------------------------------------------------------------------------------
    def finish(self, vectors: KeyedVectors | None, manifest: dict, summary: dict) -> dict:
        """Flush, fold the failures, write words.parquet, summary.json and (last) manifest.json.

        The summary gains the store's totals (``store``: videos, failures and failures by reason, exactly what
        the manifest and the failures table hold) and, when files were moved aside, ``quarantine``; it is kept
        as ``self.summary``. Returns the manifest.
        """
        self.flush()
        self.wait()
        shards = shard_entries(self.root)
        done = {video_id for shard in shards for video_id in shard["video_ids"]}
        failures = [row for video_id, row in self.failures.items() if video_id not in done]
        self.check_lock()
        write_table_atomic(
            pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA), storage.join(self.root, store.FAILURES)
        )
        for part in storage.list_files(self.failure_dir, "part-*.parquet"):
            storage.remove(part)
        # Every id any shard uses (earlier, interrupted runs included), looked up in the word vectors.
        token_ids = np.array(sorted(set().union(*(s.pop("token_ids") for s in shards))), np.int32)
        if (
            vectors is None
        ):  # captions were stored without token ids: an empty table (Arrow needs a width >= 1)
            token_ids, words, vectors_UW = np.zeros(0, np.int32), [], np.zeros((0, 1), np.float32)
        else:
            words = [vectors.index_to_key[i] for i in token_ids]
            vectors_UW = np.asarray(vectors.vectors[token_ids], np.float32).reshape(
                len(token_ids), vectors.vector_size
            )
        store.write_words(self.root, token_ids, words, vectors_UW)
        counts = {
            "videos": len(done),
            "failures": len(failures),
            "shards": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
            "words": int(len(token_ids)),
        }
        totals = {
            "videos": counts["videos"],
            "failures": counts["failures"],
            "failures_by_reason": dict(sorted(Counter(row["reason"] for row in failures).items())),
        }
        extra = {"quarantine": self.quarantined} if self.quarantined else {}
        self.summary = {**summary, **extra, "store": totals}
        write_json_atomic(storage.join(self.root, SUMMARY), self.summary)
        manifest = {
            **manifest,
            "format_version": self.format_version,
            "counts": counts,
            "hours": round(sum(s["hours"] for s in shards), 6),
            "shards": shards,
        }
        self.check_lock()
        store.write_manifest(self.root, manifest)
        return manifest

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def shard_entries(root: storage.StorePath) -> list[dict]:
    """name, video ids, bytes, hours and used token ids of every completed shard, read from the shards."""
    entries = []
    for path in store.list_shards(root):
        summary = store.shard_summary(path)
        entries.append(
            {
                "name": storage.name(path),
                "video_ids": summary.video_ids,
                "bytes": summary.nbytes,
                "hours": float(summary.durations.sum()) / 3600.0,
                "token_ids": set(summary.token_ids.tolist()),
            }
        )
    return entries


def extraction_identity(config: PipelineConfig) -> dict:
    """What must not change between runs into one store: models, weights, word vectors, frame sampling."""
    models, text = config.extract.models, config.extract.text
    decode = config_to_dict(config.extract.decode)
    for name in ("ffmpeg", "timeout_s"):  # how to decode, not what is decoded
        decode.pop(name, None)
    if decode.get("backend") == "decord":  # the default, left out so that stores made before the option match
        decode.pop("backend")
    if decode.get("kernel") == "reference":  # likewise
        decode.pop("kernel")
    return {
        "model_2d": models.model_2d,
        "weights_2d": "torchvision-download"
        if models.download_2d
        else weights_fingerprint(models.weights_2d),
        "model_3d": models.model_3d,
        "weights_3d": weights_fingerprint(models.weights_3d),
        "word_vectors": None if text.word_vectors is None else sha256_file(text.word_vectors),
        "decode": decode,
    }


def manifest_header(config: PipelineConfig, identity: dict, vectors: KeyedVectors | None) -> dict:
    """What the manifest says about how the store was made (finish() adds counts and shards)."""
    return {
        "created_by": f"mcn {__version__}",
        "extraction": identity,
        "extractors": _extractors(config, identity),
        "vocabulary": {
            "word_vectors": config.extract.text.word_vectors,
            "fingerprint": identity["word_vectors"],
            "dim": None if vectors is None else int(vectors.vector_size),
            "size": None if vectors is None else len(vectors.index_to_key),
        },
    }


def _extractors(config: PipelineConfig, identity: dict) -> dict:
    """Names, weights, fingerprints and versions of every extractor, for the manifest."""
    import ray
    import torch

    models, decode = config.extract.models, config.extract.decode
    extractors = {
        "feat_2d": {
            "model": models.model_2d,
            "weights": models.weights_2d,
            "weights_sha256": identity["weights_2d"],
            "rate_hz": decode.rate_2d,
            "size": decode.size_2d,
        },
        "feat_3d": {
            "model": models.model_3d,
            "weights": models.weights_3d,
            "weights_sha256": identity["weights_3d"],
            "rate_hz": decode.rate_3d,
            "size": decode.size_3d,
        },
        "logmel": {"recipe": "40 mels, 16 kHz, 25 ms Hamming, 10 ms hop, dB re max"},
        "versions": {"mcn": __version__, "torch": torch.__version__, "ray": ray.__version__},
    }
    if config.asr.enabled:
        extractors["asr"] = {
            "backend": config.asr.backend,
            "model": config.asr.model_path or "whisper-base (pip parts)",
        }
    return extractors
