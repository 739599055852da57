"""The feature store format: the only interface between preprocessing and training/evaluation.

A store is a folder or an object-store prefix (any path :mod:`mcn.storage` resolves)::

    STORE/
      shards/shard-000000.parquet   numbered shards, each holding whole videos, one Parquet row group per video
      words.parquet                 vocabulary table: token_id, word, vector (the rows the captions use)
      failures.parquet              videos that could not be extracted: video_id, source_path, stage, reason, detail
      manifest.json                 written last: format version, feature specs, shard list, counts, extractors

Parquet was chosen over WebDataset tars because a row group can be read on its own (one video without reading
its shard), columns can be projected (captions without features), the schema and key-value metadata make every
shard self-describing, and every data tool reads it. Every file is written atomically (:func:`storage.atomic_write`),
so a half-written shard never looks finished.

Format 2 stores features as standard Arrow columns, ``list<fixed_size_list<float16, D>>`` (one D-vector per
frame, time first, log-mel included) and captions as ``list<struct<start, end, text, token_ids>>``, so pyarrow,
pandas, DuckDB and Ray Data read them without this module. Format 1 (raw little-endian bytes plus a shape
column, four parallel caption lists) is still read. Token ids index the word-vector table the store was built
with; ``words.parquet`` holds the vector of every id a caption uses, so training needs no copy of the original
(multi-GB) word2vec file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mcn import shard_reader, storage, store_rows
from mcn.configs import write_json_atomic
from mcn.errors import MCNError
from mcn.storage import StorePath
from mcn.store_rows import (  # noqa: F401 (the store's vocabulary, used as mcn.store.NAME)
    ARRAY_COLUMNS,
    CAPTION_COLUMNS,
    FEATURE_SPECS,
    META_COLUMNS,
    SCHEMA,
    SCHEMA_V2,
    VideoRecord,
)

FORMAT_VERSIONS = (1, 2)  # the formats this module reads
LATEST_FORMAT_VERSION = 2
STORE_FORMAT_VERSION = 1  # what write_shard and write_manifest write unless told otherwise
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
WORDS = "words.parquet"
FAILURES = "failures.parquet"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def write_shard(
    path: StorePath,
    records: Iterable[VideoRecord],
    metadata: dict | None = None,
    format_version: int = STORE_FORMAT_VERSION,
) -> int:
    """Write whole videos to one shard atomically, one row group per video. Returns the size in bytes."""
    if format_version not in FORMAT_VERSIONS:
        raise ValueError(f"store format {format_version} does not exist; use one of {FORMAT_VERSIONS}")
    schema = store_rows.SCHEMAS[format_version].with_metadata(
        {
            "mcn_store_format": str(format_version),
            **{k: json.dumps(v) for k, v in (metadata or {}).items()},
        }
    )
    options = store_rows.PARQUET_OPTIONS[format_version]
    with storage.atomic_write(path) as file:
        with pq.ParquetWriter(file, schema, **options) as writer:
            for record in records:  # one row group per video: a video can be read on its own
                writer.write_table(store_rows.record_to_table(record, format_version, schema))
        return file.tell()


def read_shard_video(path: StorePath, row_group: int, fields: Sequence[str] | None = None) -> VideoRecord:
    """One video from a shard, reading only its row group (and only the asked-for columns)."""
    with shard_reader.open_shard(path) as shard:
        return shard_reader.read_row_group(shard, row_group, fields)


def iter_shard(path: StorePath, fields: Sequence[str] | None = None) -> Iterator[VideoRecord]:
    """Every video of a shard, one row group at a time."""
    with shard_reader.open_shard(path) as shard:
        for row_group in range(shard.footer.metadata.num_row_groups):
            yield shard_reader.read_row_group(shard, row_group, fields)


def shard_format(path: StorePath) -> int:
    """The store format of a shard (1 or 2), from its schema."""
    with shard_reader.open_shard(path) as shard:
        return shard.footer.version


def _read_columns(path: StorePath, columns: list[str], caption_field: str | None = None) -> pa.Table:
    """Whole columns of a shard, plus one caption field as a list per video (named ``captions``)."""
    with shard_reader.open_shard(path) as shard:
        version = shard.footer.version
        if caption_field is not None:
            caption = f"caption_{caption_field}" if version == 1 else f"captions.list.element.{caption_field}"
            columns = [*columns, caption]
        table = pq.ParquetFile(shard.file, metadata=shard.footer.metadata).read(columns=columns)
    if caption_field is None:
        return table
    lists = table.column(table.num_columns - 1).combine_chunks()
    if version == 2:  # list<struct<field>> -> list<field>
        lists = pa.ListArray.from_arrays(lists.offsets, lists.values.flatten()[0])
    return table.drop_columns(table.column_names[-1]).append_column("captions", lists)


def shard_video_ids(path: StorePath) -> list[str]:
    """The video ids of a shard, in row-group order (reads only the id column)."""
    return _read_columns(path, ["video_id"]).column("video_id").to_pylist()


def shard_caption_counts(path: StorePath) -> np.ndarray:
    """Captions per video of a shard, in row-group order (reads one small column)."""
    column = _read_columns(path, [], caption_field="start").column("captions")
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class ShardSummary:
    """The small columns of a shard, for manifests and store tools."""

    video_ids: list[str]
    durations: np.ndarray  # (V,) float64 seconds
    token_ids: np.ndarray  # (U,) int32: every token id a caption of the shard uses, sorted
    nbytes: int


def shard_summary(path: StorePath) -> ShardSummary:
    """Video ids, durations and used token ids of a shard (either format), without its features."""
    table = _read_columns(path, ["video_id", "duration"], caption_field="token_ids")
    ids = table.column("captions").combine_chunks().flatten().flatten()  # video -> caption -> id
    return ShardSummary(
        video_ids=table.column("video_id").to_pylist(),
        durations=table.column("duration").to_numpy(),
        token_ids=np.unique(ids.to_numpy(zero_copy_only=False)).astype(np.int32),
        nbytes=storage.size(path),
    )


def list_shards(root: StorePath) -> list[StorePath]:
    """Completed shards of a store (temporary files are never listed)."""
    return storage.list_files(storage.join(root, SHARD_DIR), "shard-*.parquet")


# ---- vocabulary table ----------------------------------------------------------------------------------------


@dataclass
class WordTable:
    """Word vectors for the token ids a store uses. ``vectors_UW[i]`` is the vector of ``token_ids[i]``."""

    token_ids: np.ndarray  # (U,) int32, sorted
    words: list[str]
    vectors_UW: np.ndarray  # (U, W) float32

    @property
    def dim(self) -> int:
        return int(self.vectors_UW.shape[1])

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of token ids (any shape) -> shape + (W,). Unknown ids are an error."""
        ids = np.asarray(ids)
        rows = np.searchsorted(self.token_ids, ids)
        rows = np.clip(rows, 0, max(len(self.token_ids) - 1, 0))
        if ids.size and (len(self.token_ids) == 0 or not np.array_equal(self.token_ids[rows], ids)):
            raise KeyError("token ids missing from the store's word table")
        return self.vectors_UW[rows]


def write_words(root: StorePath, token_ids: np.ndarray, words: Sequence[str], vectors_UW: np.ndarray) -> None:
    order = np.argsort(np.asarray(token_ids, np.int64), kind="stable")
    token_ids = np.asarray(token_ids, np.int32)[order]
    vectors = np.asarray(vectors_UW, np.float32)[order]
    table = pa.table(
        {
            "token_id": pa.array(token_ids, pa.int32()),
            "word": pa.array([words[i] for i in order], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1] if vectors.ndim == 2 else 0
            ),
        }
    )
    with storage.atomic_write(storage.join(root, WORDS)) as file:
        pq.write_table(table, file)


def read_words(root: StorePath) -> WordTable:
    path = storage.join(root, WORDS)
    if not storage.is_file(path):
        raise MCNError(
            f"{root} has no {WORDS}; the store is unfinished: rerun the extraction command to complete it"
        )
    with storage.open_input(path) as file:
        table = pq.read_table(file)
    vectors = table.column("vector").combine_chunks()
    dim = vectors.type.list_size
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return WordTable(
        token_ids=table.column("token_id").to_numpy().astype(np.int32),
        words=table.column("word").to_pylist(),
        vectors_UW=flat.reshape(-1, dim).astype(np.float32),
    )


# ---- manifest and reader -------------------------------------------------------------------------------------


def write_manifest(root: StorePath, manifest: dict) -> None:
    """Write the dataset manifest (the last file a finished job writes); ``manifest`` may set format_version."""
    write_json_atomic(
        storage.join(root, MANIFEST),
        {"format_version": STORE_FORMAT_VERSION, "features": FEATURE_SPECS, **manifest},
    )


def read_manifest(root: StorePath) -> dict | None:
    """The manifest of a finished store; None if the store has none (unfinished or not a store)."""
    path = storage.join(root, MANIFEST)
    return json.loads(storage.read_bytes(path)) if storage.is_file(path) else None


def read_failures(root: StorePath) -> list[dict]:
    path = storage.join(root, FAILURES)
    if not storage.is_file(path):
        return []
    with storage.open_input(path) as file:
        return pq.read_table(file).to_pylist()


class StoreReader:
    """Read-only view of a finished store: ``reader.read(video_id)`` loads one video's row group only."""

    def __init__(self, root: StorePath):
        self.root = storage.join(root)
        manifest = read_manifest(self.root)
        if manifest is None and not storage.exists(self.root):
            raise MCNError(f"store {self.root} does not exist")
        if manifest is None:
            raise MCNError(
                f"{self.root} has no {MANIFEST}: it is not a finished store (rerun `mcn extract` to finish it)"
            )
        self.manifest = manifest
        version = self.manifest.get("format_version")
        if version not in FORMAT_VERSIONS:
            raise MCNError(
                f"{self.root} has store format {version}; this mcn reads formats "
                f"{', '.join(map(str, FORMAT_VERSIONS))} (upgrade mcn to read it)"
            )
        self._location: dict[str, tuple[StorePath, int]] = {}
        for shard in self.manifest["shards"]:
            for row_group, video_id in enumerate(shard["video_ids"]):
                self._location[video_id] = (storage.join(self.root, SHARD_DIR, shard["name"]), row_group)
        self._words: WordTable | None = None

    def __len__(self) -> int:
        return len(self._location)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._location

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    @property
    def video_ids(self) -> list[str]:
        return list(self._location)

    @property
    def shard_paths(self) -> list[StorePath]:
        return [storage.join(self.root, SHARD_DIR, shard["name"]) for shard in self.manifest["shards"]]

    def read(self, video_id: str, fields: Sequence[str] | None = None) -> VideoRecord:
        if video_id not in self._location:
            raise MCNError(f"video {video_id!r} is not in store {self.root}")
        path, row_group = self._location[video_id]
        return read_shard_video(path, row_group, fields)

    def iter_videos(self, fields: Sequence[str] | None = None) -> Iterator[VideoRecord]:
        for path in self.shard_paths:
            yield from iter_shard(path, fields)

    @property
    def words(self) -> WordTable:
        if self._words is None:
            self._words = read_words(self.root)
        return self._words

    def failures(self) -> list[dict]:
        return read_failures(self.root)


# ---- migration -----------------------------------------------------------------------------------------------


def migrate_store(old: StorePath, new: StorePath) -> dict:
    """Convert a finished format-1 store into a format-2 store at ``new``; returns counts of what was done.

    Shard by shard, each under its own name and written atomically, so a rerun after a crash converts only
    the shards that are missing (every video is converted exactly once); the other files are copied, and the
    manifest is written last, so ``new`` is a finished store only when everything is there.
    """
    reader = StoreReader(old)
    if reader.format_version != 1:
        raise MCNError(f"{old} is already store format {reader.format_version}: there is nothing to migrate")
    if str(storage.join(old)) == str(storage.join(new)):
        raise MCNError("migrate writes a new store: give a NEW folder other than OLD")
    done = read_manifest(new)
    if done is not None and "migrated_from" not in done:
        raise MCNError(f"{new} is already a store of its own: give an empty or new folder")
    storage.remove_temporaries(storage.join(new, SHARD_DIR))
    shards, num_converted = [], 0
    for entry in reader.manifest["shards"]:
        source = storage.join(reader.root, SHARD_DIR, entry["name"])
        target = storage.join(new, SHARD_DIR, entry["name"])
        if storage.is_file(target):  # converted by an earlier run: shards are only ever published whole
            if shard_format(target) != 2 or shard_video_ids(target) != entry["video_ids"]:
                raise MCNError(f"{target} is not the migration of {source}: give an empty or new folder")
        else:
            write_shard(target, iter_shard(source), _user_metadata(source), format_version=2)
            num_converted += 1
        shards.append({**entry, "bytes": storage.size(target)})
    copied = 0
    for path in storage.list_files(reader.root, recursive=True):
        relative = str(path)[len(str(reader.root)) :].strip("/")
        if relative.split("/")[0] in (SHARD_DIR, MANIFEST) or storage.name(path).startswith("."):
            continue
        storage.copy(path, storage.join(new, *relative.split("/")))
        copied += 1
    counts = {**reader.manifest.get("counts", {}), "bytes": sum(s["bytes"] for s in shards)}
    manifest = {
        **reader.manifest,
        "format_version": 2,
        "counts": counts,
        "shards": shards,
        "migrated_from": {"store": str(reader.root), "format_version": reader.format_version},
    }
    write_manifest(new, manifest)
    return {
        "shards_converted": num_converted,
        "shards_kept": len(shards) - num_converted,
        "files_copied": copied,
    }


def _user_metadata(path: StorePath) -> dict:
    """A shard's own key-value metadata (video ids, extraction identity), decoded."""
    with shard_reader.open_shard(path) as shard:
        raw = shard.footer.metadata.metadata or {}
    skip = {b"mcn_store_format", b"ARROW:schema"}
    return {k.decode(): json.loads(v) for k, v in raw.items() if k not in skip}
