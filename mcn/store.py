"""The feature store format: the only interface between preprocessing and training/evaluation.

A store is a folder::

    STORE/
      shards/shard-000000.parquet   numbered shards, each holding whole videos, one Parquet row group per video
      words.parquet                 vocabulary table: token_id, word, vector (the rows the captions use)
      failures.parquet              videos that could not be extracted: video_id, source_path, stage, reason, detail
      manifest.json                 written last: format version, feature specs, shard list, counts, extractors

Parquet was chosen over WebDataset tars because a row group can be read on its own (one video without reading
its shard), columns can be projected (captions without features), the schema and key-value metadata make every
shard self-describing, and pyarrow is a well-kept dependency that every data tool reads. Shards are written to
a temporary name and renamed when complete, so a half-written shard never looks finished.

Arrays are stored as raw little-endian bytes plus a shape column; dtypes come from :data:`FEATURE_SPECS`.
Token ids index the word-vector table the store was built with; ``words.parquet`` holds the vector of every id
a caption uses, so training needs no copy of the original (multi-GB) word2vec file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mcn.configs import write_json_atomic
from mcn.errors import MCNError

STORE_FORMAT_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
WORDS = "words.parquet"
FAILURES = "failures.parquet"

# name -> (dtype, shape with None for the time axis, rate per second)
FEATURE_SPECS: dict[str, dict] = {
    "feat_2d": {
        "dtype": "float16",
        "shape": [None, 2048],
        "rate_hz": 1.0,
        "what": "ResNet-152 avg-pool, L2-normalised",
    },
    "feat_3d": {
        "dtype": "float16",
        "shape": [None, 2048],
        "rate_hz": 1.5,
        "what": "3D ResNeXt-101 avg-pool, L2-normalised",
    },
    "logmel": {
        "dtype": "float16",
        "shape": [40, None],
        "rate_hz": 100.0,
        "what": "40-bin log-mel, dB re max",
    },
}
ARRAY_COLUMNS = tuple(FEATURE_SPECS)
CAPTION_COLUMNS = ("caption_start", "caption_end", "caption_text", "caption_token_ids")
META_COLUMNS = (
    "video_id",
    "source_path",
    "duration",
    "fps",
    "width",
    "height",
    "has_audio",
    "caption_source",
    "extra",
)

SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source_path", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("has_audio", pa.bool_()),
        ("caption_source", pa.string()),
        ("extra", pa.string()),
        *[(name, pa.binary()) for name in ARRAY_COLUMNS],
        *[(f"{name}_shape", pa.list_(pa.int32())) for name in ARRAY_COLUMNS],
        ("caption_start", pa.list_(pa.float32())),
        ("caption_end", pa.list_(pa.float32())),
        ("caption_text", pa.list_(pa.string())),
        ("caption_token_ids", pa.list_(pa.list_(pa.int32()))),
    ]
)


@dataclass
class VideoRecord:
    """Everything the store holds for one video. Arrays are None when a read did not ask for them."""

    video_id: str
    source_path: str = ""
    duration: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    has_audio: bool = False
    caption_source: str = "none"
    extra: dict = field(default_factory=dict)
    feat_2d: np.ndarray | None = None  # (T2, 2048) float16
    feat_3d: np.ndarray | None = None  # (T3, 2048) float16
    logmel: np.ndarray | None = None  # (40, Ta) float16; (40, 0) without audio
    caption_start: np.ndarray | None = None  # (C,) float32 seconds
    caption_end: np.ndarray | None = None  # (C,) float32 seconds
    caption_text: list[str] | None = None
    caption_token_ids: list[np.ndarray] | None = None  # C arrays of int32 ids into the word table

    @property
    def num_captions(self) -> int:
        return 0 if self.caption_start is None else len(self.caption_start)


def _record_to_row(record: VideoRecord) -> dict:
    row = {
        "video_id": record.video_id,
        "source_path": record.source_path,
        "duration": float(record.duration),
        "fps": float(record.fps),
        "width": int(record.width),
        "height": int(record.height),
        "has_audio": bool(record.has_audio),
        "caption_source": record.caption_source,
        "extra": json.dumps(record.extra, sort_keys=True),
    }
    for name in ARRAY_COLUMNS:
        spec = FEATURE_SPECS[name]
        array = getattr(record, name)
        if array is None:
            array = np.zeros([0 if d is None else d for d in spec["shape"]], dtype=spec["dtype"])
        array = np.ascontiguousarray(array, dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
        if array.ndim != len(spec["shape"]) or any(
            d is not None and d != s for d, s in zip(spec["shape"], array.shape)
        ):
            raise ValueError(f"{record.video_id}: {name} has shape {array.shape}, expected {spec['shape']}")
        row[name] = array.tobytes()
        row[f"{name}_shape"] = list(array.shape)
    num_captions = record.num_captions
    texts = record.caption_text or []
    token_ids = record.caption_token_ids or []
    if len(texts) != num_captions or len(token_ids) != num_captions:
        raise ValueError(f"{record.video_id}: caption columns disagree in length")
    row["caption_start"] = (
        [] if record.caption_start is None else np.asarray(record.caption_start, np.float32).tolist()
    )
    row["caption_end"] = (
        [] if record.caption_end is None else np.asarray(record.caption_end, np.float32).tolist()
    )
    row["caption_text"] = list(texts)
    row["caption_token_ids"] = [np.asarray(ids, np.int32).tolist() for ids in token_ids]
    return row


def _record_from_table(table: pa.Table) -> VideoRecord:
    """The first row of a (one-row-group) table as a record; arrays are views of Arrow buffers, not copies."""
    names = set(table.column_names)
    record = VideoRecord(video_id=table.column("video_id")[0].as_py())
    for name in META_COLUMNS:
        if name in names:
            value = table.column(name)[0].as_py()
            setattr(record, name, json.loads(value) if name == "extra" else value)
    for name in ARRAY_COLUMNS:
        if name in names:
            dtype = np.dtype(FEATURE_SPECS[name]["dtype"]).newbyteorder("<")
            shape = table.column(f"{name}_shape")[0].values.to_numpy()
            array = np.frombuffer(table.column(name)[0].as_buffer(), dtype=dtype).reshape(shape)
            setattr(record, name, array.astype(FEATURE_SPECS[name]["dtype"], copy=False))
    if "caption_start" in names:
        record.caption_start = table.column("caption_start")[0].values.to_numpy(zero_copy_only=False)
        record.caption_end = table.column("caption_end")[0].values.to_numpy(zero_copy_only=False)
        record.caption_text = table.column("caption_text")[0].as_py()
        token_lists = table.column("caption_token_ids")[0].values
        record.caption_token_ids = [
            token_lists[i].values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
            for i in range(len(token_lists))
        ]
    return record


def _columns_for(fields: Sequence[str] | None) -> list[str] | None:
    """Parquet columns for a projection of VideoRecord fields (None = everything)."""
    if fields is None:
        return None
    columns = ["video_id"]
    for name in fields:
        if name in ARRAY_COLUMNS:
            columns += [name, f"{name}_shape"]
        elif name == "captions":
            columns += list(CAPTION_COLUMNS)
        elif name in META_COLUMNS:
            columns.append(name)
        else:
            raise ValueError(
                f"unknown store field {name!r}; use {list(META_COLUMNS) + list(ARRAY_COLUMNS) + ['captions']}"
            )
    return list(dict.fromkeys(columns))


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def write_shard(path: str | Path, records: Sequence[VideoRecord], metadata: dict | None = None) -> int:
    """Write whole videos to one shard atomically (temporary name, fsync, rename). Returns the size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    schema = SCHEMA.with_metadata(
        {
            "mcn_store_format": str(STORE_FORMAT_VERSION),
            **{k: json.dumps(v) for k, v in (metadata or {}).items()},
        }
    )
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=1) as writer:
            for record in records:  # one row group per video: a video can be read on its own
                writer.write_table(pa.Table.from_pylist([_record_to_row(record)], schema=schema))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def shard_video_ids(path: str | Path) -> list[str]:
    """The video ids of a shard, in row-group order (reads only the id column)."""
    return pq.read_table(path, columns=["video_id"]).column("video_id").to_pylist()


def shard_caption_counts(path: str | Path) -> np.ndarray:
    """Captions per video of a shard, in row-group order (reads one small column)."""
    column = pq.read_table(path, columns=["caption_start"]).column("caption_start")
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def read_shard_video(path: str | Path, row_group: int, fields: Sequence[str] | None = None) -> VideoRecord:
    """One video from a shard, reading only its row group (and only the asked-for columns)."""
    table = pq.ParquetFile(path).read_row_group(row_group, columns=_columns_for(fields))
    return _record_from_table(table)


def iter_shard(path: str | Path, fields: Sequence[str] | None = None) -> Iterator[VideoRecord]:
    """Every video of a shard, one row group at a time."""
    parquet = pq.ParquetFile(path)
    columns = _columns_for(fields)
    for index in range(parquet.num_row_groups):
        yield _record_from_table(parquet.read_row_group(index, columns=columns))


def list_shards(root: str | Path) -> list[Path]:
    """Completed shards of a store (temporary files are never listed)."""
    folder = Path(root) / SHARD_DIR
    return sorted(folder.glob("shard-*.parquet")) if folder.is_dir() else []


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


def write_words(
    root: str | Path, token_ids: np.ndarray, words: Sequence[str], vectors_UW: np.ndarray
) -> None:
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
    path = Path(root) / WORDS
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_words(root: str | Path) -> WordTable:
    path = Path(root) / WORDS
    if not path.exists():
        raise MCNError(
            f"{root} has no {WORDS}; the store is unfinished: rerun the extraction command to complete it"
        )
    table = pq.read_table(path)
    vectors = table.column("vector").combine_chunks()
    dim = vectors.type.list_size
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    return WordTable(
        token_ids=table.column("token_id").to_numpy().astype(np.int32),
        words=table.column("word").to_pylist(),
        vectors_UW=flat.reshape(-1, dim).astype(np.float32),
    )


# ---- manifest and reader -------------------------------------------------------------------------------------


def write_manifest(root: str | Path, manifest: dict) -> None:
    """Write the dataset manifest (the last file a finished job writes)."""
    write_json_atomic(
        Path(root) / MANIFEST, {"format_version": STORE_FORMAT_VERSION, "features": FEATURE_SPECS, **manifest}
    )


def read_failures(root: str | Path) -> list[dict]:
    path = Path(root) / FAILURES
    return pq.read_table(path).to_pylist() if path.exists() else []


class StoreReader:
    """Read-only view of a finished store: ``reader.read(video_id)`` loads one video's row group only."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not self.root.is_dir():
            raise MCNError(f"store {self.root} does not exist")
        if not manifest_path.exists():
            raise MCNError(
                f"{self.root} has no {MANIFEST}: it is not a finished store (rerun `mcn extract` to finish it)"
            )
        self.manifest = json.loads(manifest_path.read_text())
        version = self.manifest.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise MCNError(
                f"{self.root} has store format {version}; this mcn reads format {STORE_FORMAT_VERSION}"
            )
        self._location: dict[str, tuple[Path, int]] = {}
        for shard in self.manifest["shards"]:
            for row_group, video_id in enumerate(shard["video_ids"]):
                self._location[video_id] = (self.root / SHARD_DIR / shard["name"], row_group)
        self._words: WordTable | None = None

    def __len__(self) -> int:
        return len(self._location)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._location

    @property
    def video_ids(self) -> list[str]:
        return list(self._location)

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / SHARD_DIR / shard["name"] for shard in self.manifest["shards"]]

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
