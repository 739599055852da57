"""The store side of the extraction job: resume state, shard writing, failure parts, words and manifest.

Progress is nothing but files in STORE, each written atomically (temporary name, then rename):

- ``shards/shard-NNNNNN.parquet``: whole videos, self-describing (their ids are in the file);
- ``failures/part-*.parquet``: failure records, written as soon as a video fails;
- ``extraction.json``: the identity of the extraction (models, weights and word-vector fingerprints, decoding);
  a rerun with a different identity is refused instead of mixing features.

On start the writer removes stray temporary files (a half-written shard is never listed as complete) and the
old ``manifest.json`` (a store without one is unfinished), and reads which videos are already in a shard or
in the failures: those are skipped. ``finish`` folds the failure parts into ``failures.parquet`` (the latest
record per video, minus videos that have since succeeded), then writes ``words.parquet`` and the manifest last.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mcn import __version__, store
from mcn.configs import config_to_dict, write_json_atomic
from mcn.errors import MCNError
from mcn.pipeline.config import PipelineConfig, ShardConfig

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

EXTRACTION = "extraction.json"
SUMMARY = "summary.json"
CONFIG = "config.json"
FAILURE_PARTS = "failures"
LOCK = ".lock"
FAILURE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("video_id", "source_path", "stage", "reason", "detail")]
)


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


class StoreWriter:
    """Owns STORE for the length of one job (an exclusive lock keeps a second job out)."""

    def __init__(self, root: str | Path, identity: dict, shards: ShardConfig):
        self.root = Path(root)
        self.identity = identity
        self.limits = shards
        self.shard_dir = self.root / store.SHARD_DIR
        self.failure_dir = self.root / FAILURE_PARTS
        self._lock_file = None
        self._buffer: list[store.VideoRecord] = []
        self._buffer_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: list[Future] = []
        self._next_shard = 0
        self.write_seconds = 0.0
        self.done_ids: set[str] = set()
        self.failures: dict[str, dict] = {}

    # ---- start ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Lock STORE, check or record the extraction identity, clean up, and load what is already done."""
        if self.root.exists() and not self.root.is_dir():
            raise MCNError(f"--out {self.root} is a file; give a folder for the store")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.failure_dir.mkdir(exist_ok=True)
        self._lock_file = open(self.root / LOCK, "w")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MCNError(
                f"another extraction job is writing to {self.root}; wait for it or use another --out"
            ) from None
        identity_path = self.root / EXTRACTION
        if identity_path.exists():
            existing = json.loads(identity_path.read_text())
            if existing != self.identity:
                changed = sorted(
                    k for k in set(existing) | set(self.identity) if existing.get(k) != self.identity.get(k)
                )
                raise MCNError(
                    f"{self.root} was extracted with a different config ({', '.join(changed)} differ); "
                    "use a new --out folder, or the original models, weights and word vectors"
                )
        else:
            write_json_atomic(identity_path, self.identity)
        for stray in [
            *self.shard_dir.glob(".*.tmp-*"),
            *self.failure_dir.glob(".*.tmp"),
            *self.root.glob(".*.tmp*"),
        ]:
            stray.unlink(missing_ok=True)
        (self.root / store.MANIFEST).unlink(missing_ok=True)
        shards = store.list_shards(self.root)
        for path in shards:
            self.done_ids.update(store.shard_video_ids(path))
        self._next_shard = int(shards[-1].stem.split("-")[1]) + 1 if shards else 0
        self.failures = latest_failures(self.root)

    # ---- during the job -------------------------------------------------------------------------------------
    def record_failures(self, rows: list[dict]) -> None:
        """Persist failure records at once (one small part file), so a crash never forgets them."""
        if not rows:
            return
        rows = [{name: str(row.get(name, "")) for name in FAILURE_SCHEMA.names} for row in rows]
        name = f"part-{time.time_ns():020d}-{os.getpid()}.parquet"
        tmp = self.failure_dir / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), tmp)
        os.replace(tmp, self.failure_dir / name)
        self.failures.update({row["video_id"]: row for row in rows})

    def add(self, record: store.VideoRecord) -> None:
        """Buffer a finished video; a full buffer becomes the next shard (written in a background thread)."""
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
        path = self.shard_dir / store.shard_name(self._next_shard)
        self._next_shard += 1
        records, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self._pending.append(self._pool.submit(self._write, path, records))

    def _write(self, path: Path, records: list[store.VideoRecord]) -> None:
        start = time.perf_counter()
        ids = [r.video_id for r in records]
        store.write_shard(path, records, metadata={"video_ids": ids, "extraction": self.identity})
        self.done_ids.update(ids)
        self.write_seconds += time.perf_counter() - start

    def wait(self) -> None:
        """Block until every submitted shard is on disk (re-raises a write error)."""
        for future in self._pending:
            future.result()
        self._pending = []

    # ---- end ------------------------------------------------------------------------------------------------
    def finish(self, vectors: KeyedVectors | None, manifest: dict, summary: dict) -> dict:
        """Flush, fold the failures, write words.parquet and (last) manifest.json. Returns the manifest."""
        self.flush()
        self.wait()
        shards = shard_entries(self.root)
        done = {video_id for shard in shards for video_id in shard["video_ids"]}
        failures = [row for video_id, row in self.failures.items() if video_id not in done]
        tmp = self.root / f".{store.FAILURES}.tmp"
        pq.write_table(pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA), tmp)
        os.replace(tmp, self.root / store.FAILURES)
        for part in self.failure_dir.glob("part-*.parquet"):
            part.unlink()
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
        write_json_atomic(self.root / SUMMARY, summary)
        manifest = {
            **manifest,
            "counts": {
                "videos": len(done),
                "failures": len(failures),
                "shards": len(shards),
                "bytes": sum(s["bytes"] for s in shards),
                "words": int(len(token_ids)),
            },
            "hours": round(sum(s["hours"] for s in shards), 6),
            "shards": shards,
        }
        store.write_manifest(self.root, manifest)
        return manifest

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def latest_failures(root: str | Path) -> dict[str, dict]:
    """The latest failure record per video: failures.parquet, then the parts of an unfinished job in order."""
    failures = {row["video_id"]: row for row in store.read_failures(root)}
    for part in sorted((Path(root) / FAILURE_PARTS).glob("part-*.parquet")):
        failures.update({row["video_id"]: row for row in pq.read_table(part).to_pylist()})
    return failures


def shard_entries(root: str | Path) -> list[dict]:
    """name, video ids, bytes, hours and used token ids of every completed shard, read from the shards."""
    entries = []
    for path in store.list_shards(root):
        table = pq.read_table(path, columns=["video_id", "duration", "caption_token_ids"])
        ids = table.column("caption_token_ids").combine_chunks().flatten().flatten()
        entries.append(
            {
                "name": path.name,
                "video_ids": table.column("video_id").to_pylist(),
                "bytes": path.stat().st_size,
                "hours": float(sum(table.column("duration").to_pylist())) / 3600.0,
                "token_ids": set(np.unique(ids.to_numpy(zero_copy_only=False)).tolist()),
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
