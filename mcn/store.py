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

import errno
import json
import os
import re
import stat
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
FAILURE_COLUMNS = ("video_id", "source_path", "stage", "reason", "detail")
_SHARD_NAME = re.compile(r"shard-(\d{6,})\.parquet")

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


class StoreDamage(MCNError):
    """A file of a store that is not what the store wrote: missing parts, torn, a link, a folder, unreadable.

    ``path`` is the file, ``reason`` one line saying what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path} {reason}")
        self.path = Path(path)
        self.reason = reason


def open_regular(path: str | Path):  # -> BinaryIO
    """Open a store file for reading without following a symbolic link and without blocking on a FIFO.

    Anything but a regular file raises :class:`StoreDamage`; a missing file raises ``FileNotFoundError``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StoreDamage(path, "is a symbolic link (a store holds no links)") from None
        raise StoreDamage(path, f"cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreDamage(path, "is not a regular file")
    return os.fdopen(fd, "rb")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def invalid_captions(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Mask of the captions whose times are invalid: not finite, before 0 s, or ending before they start.

    The one rule that extraction (:mod:`mcn.extract.text`), ``mcn store verify`` and training apply.
    """
    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(starts) & np.isfinite(ends) & (starts >= 0) & (ends >= starts))


def caption_problem(starts: np.ndarray, ends: np.ndarray) -> str | None:
    """One line on the first invalid caption of a video (see :func:`invalid_captions`), or None."""
    if len(starts) != len(ends):
        return f"{len(starts)} caption starts but {len(ends)} ends"
    bad = np.flatnonzero(invalid_captions(starts, ends))
    if not len(bad):
        return None
    index = int(bad[0])
    start, end = float(starts[index]), float(ends[index])
    if not (np.isfinite(start) and np.isfinite(end)):
        return f"caption {index} has a non-finite time (start {start}, end {end})"
    if start < 0:
        return f"caption {index} starts before 0 s (start {start})"
    return f"caption {index} ends before it starts (start {start}, end {end})"


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


@dataclass(frozen=True)
class ShardIndex:
    """What a whole shard holds, per video in row-group order: ids, source paths, durations and ``extra``
    dicts; and the extraction identity its metadata records (None for shards written without one)."""

    video_ids: list[str]
    source_paths: list[str]
    durations: list[float]
    extras: list[dict]
    extraction: dict | None = None


def read_shard_index(path: str | Path) -> ShardIndex:
    """Check that ``path`` is a whole shard and read its small columns; raises :class:`StoreDamage` if not.

    Whole means: a regular file (not a link), a Parquet footer (a torn file has none), the store's columns and
    types, one row group per video, distinct non-empty ids, and the ids its metadata lists. Feature bytes are
    not read (``mcn store verify`` reads them).
    """
    try:
        with open_regular(path) as f:
            parquet = pq.ParquetFile(f)
            schema = parquet.schema_arrow
            for expected in SCHEMA:
                if schema.get_field_index(expected.name) < 0:
                    raise StoreDamage(path, f"lacks the column {expected.name!r}: not a shard of this store")
                if not schema.field(expected.name).type.equals(expected.type):
                    raise StoreDamage(path, f"has a column {expected.name!r} of another type")
            table = parquet.read(columns=["video_id", "source_path", "duration", "extra"])
            num_row_groups = parquet.num_row_groups
            metadata = schema.metadata or {}
    except (StoreDamage, FileNotFoundError):
        raise
    except (OSError, pa.ArrowException) as error:
        raise StoreDamage(path, f"is not a readable shard ({_first_line(error)})") from None
    video_ids = table.column("video_id").to_pylist()
    if num_row_groups != len(video_ids) or any(not v for v in video_ids):
        raise StoreDamage(path, "does not hold one row group per video: not written by this store's writer")
    if len(set(video_ids)) != len(video_ids):
        raise StoreDamage(path, "holds a video twice")
    try:
        listed = json.loads(metadata[b"video_ids"]) if b"video_ids" in metadata else None
        extraction = json.loads(metadata[b"extraction"]) if b"extraction" in metadata else None
    except ValueError:
        raise StoreDamage(path, "has unreadable metadata") from None
    if listed is not None and listed != video_ids:
        raise StoreDamage(path, "holds other videos than its metadata lists")
    extras = []
    for text in table.column("extra").to_pylist():
        try:
            extra = json.loads(text) if text else {}
        except json.JSONDecodeError:
            raise StoreDamage(path, "has an unreadable 'extra' entry") from None
        extras.append(extra if isinstance(extra, dict) else {})
    source_paths = [p or "" for p in table.column("source_path").to_pylist()]
    durations = [float(d or 0.0) for d in table.column("duration").to_pylist()]
    extraction = extraction if isinstance(extraction, dict) else None
    return ShardIndex(video_ids, source_paths, durations, extras, extraction)


def shard_video_ids(path: str | Path) -> list[str]:
    """The video ids of a whole shard, in row-group order (see :func:`read_shard_index`)."""
    return read_shard_index(path).video_ids


def shard_captions(path: str | Path) -> tuple[np.ndarray, dict[int, str]]:
    """Captions per video of a shard in row-group order, and {row group: why its caption times are invalid}.

    Reads the two small caption-time columns only; an unreadable shard raises :class:`StoreDamage`.
    """
    try:
        table = pq.read_table(path, columns=["caption_start", "caption_end"])
    except (OSError, pa.ArrowException) as error:
        raise StoreDamage(path, f"is not a readable shard ({_first_line(error)})") from None
    starts, ends = (
        table.column("caption_start").combine_chunks(),
        table.column("caption_end").combine_chunks(),
    )
    counts = pc.list_value_length(starts).to_numpy(zero_copy_only=False).astype(np.int64)
    end_counts = pc.list_value_length(ends).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_starts = starts.flatten().to_numpy(zero_copy_only=False)
    flat_ends = ends.flatten().to_numpy(zero_copy_only=False)
    problems: dict[int, str] = {}
    if not np.array_equal(counts, end_counts):
        for row_group in np.flatnonzero(counts != end_counts).tolist():
            problems[row_group] = f"{counts[row_group]} caption starts but {end_counts[row_group]} ends"
        return counts, problems
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for row_group in np.unique(
        np.searchsorted(offsets, np.flatnonzero(invalid_captions(flat_starts, flat_ends)), "right") - 1
    ).tolist():
        begin, end = offsets[row_group], offsets[row_group + 1]
        problems[row_group] = caption_problem(flat_starts[begin:end], flat_ends[begin:end])
    return counts, problems


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
    """Completed shards of a store, numbered ``shard-NNNNNN.parquet`` (temporary files are never listed)."""
    folder = Path(root) / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _SHARD_NAME.fullmatch(p.name))


def shard_number(path: str | Path) -> int:
    """N of ``shard-N.parquet``."""
    match = _SHARD_NAME.fullmatch(Path(path).name)
    assert match is not None, f"{path} is not a shard name"
    return int(match.group(1))


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
    if not os.path.lexists(path):
        raise MCNError(
            f"{root} has no {WORDS}; the store is unfinished: rerun the extraction command to complete it"
        )
    try:
        with open_regular(path) as f:
            table = pq.read_table(f)
        vectors = table.column("vector").combine_chunks()
        dim = vectors.type.list_size
        flat = vectors.flatten().to_numpy(zero_copy_only=False)
    except (OSError, pa.ArrowException, KeyError, AttributeError) as error:
        raise StoreDamage(
            path, f"is damaged ({_first_line(error)}); rerun the extraction command to rewrite it"
        ) from None
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
    """Rows of ``failures.parquet`` (none when it does not exist); a damaged table raises :class:`StoreDamage`."""
    return read_failure_table(Path(root) / FAILURES) if os.path.lexists(Path(root) / FAILURES) else []


def read_failure_table(path: str | Path) -> list[dict]:
    """Rows of a failures table (``failures.parquet`` or a job's part file); a damaged one raises
    :class:`StoreDamage`."""
    try:
        with open_regular(path) as f:
            table = pq.read_table(f)
    except (OSError, pa.ArrowException) as error:
        raise StoreDamage(path, f"is not a readable failures table ({_first_line(error)})") from None
    missing = [name for name in FAILURE_COLUMNS[:4] if name not in table.column_names]
    if missing:
        raise StoreDamage(path, f"lacks the column(s) {missing}: not a failures table of this store")
    rows = table.to_pylist()
    if any(not isinstance(row["video_id"], str) for row in rows):  # "" is a (bad) id that is recorded too
        raise StoreDamage(path, "has a row without a video id")
    return [
        {name: "" if row.get(name) is None else str(row[name]) for name in FAILURE_COLUMNS} for row in rows
    ]


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of a finished store, None when there is none; a damaged one raises :class:`StoreDamage`."""
    path = Path(root) / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        with open_regular(path) as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreDamage(path, f"is damaged ({_first_line(error)})") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("video_ids"), list)
        for s in shards
    ):
        raise StoreDamage(path, "is damaged (no list of shards with names and video ids)")
    return manifest


class StoreReader:
    """Read-only view of a finished store: ``reader.read(video_id)`` loads one video's row group only."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MCNError(f"store {self.root} does not exist")
        self.manifest = read_manifest(self.root)
        if self.manifest is None:
            raise MCNError(
                f"{self.root} has no {MANIFEST}: it is not a finished store (rerun `mcn extract` to finish it)"
            )
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
