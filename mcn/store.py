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
so a half-written shard never looks finished. Reads trust nothing they find: a store file is never read through
a symbolic link, and a file that is not what the store wrote (torn, a link, a folder, the wrong columns, a video
twice) raises :class:`StoreDamage`, which names the file and says what is wrong with it.

Format 2 stores features as standard Arrow columns, ``list<fixed_size_list<float16, D>>`` (one D-vector per
frame, time first, log-mel included) and captions as ``list<struct<start, end, text, token_ids>>``, so pyarrow,
pandas, DuckDB and Ray Data read them without this module. Format 1 (raw little-endian bytes plus a shape
column, four parallel caption lists) is still read. Token ids index the word-vector table the store was built
with; ``words.parquet`` holds the vector of every id a caption uses, so training needs no copy of the original
(multi-GB) word2vec file.
"""

from __future__ import annotations

import contextlib
import json
import re
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
STORE_FORMAT_VERSION = 2  # what write_shard and write_manifest write unless told otherwise
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
WORDS = "words.parquet"
FAILURES = "failures.parquet"
LOCK = ".lock"  # the extraction job's lock: it belongs to the store's place, never copied with it
FAILURE_COLUMNS = ("video_id", "source_path", "stage", "reason", "detail")
_SHARD_NAME = re.compile(r"shard-(\d{6,})\.parquet")


class StoreDamage(MCNError):
    """A file of a store that is not what the store wrote: missing parts, torn, a link, a folder, unreadable.

    ``path`` is the file, ``reason`` one line saying what is wrong with it.
    """

    def __init__(self, path: StorePath, reason: str):
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


def open_regular(path: StorePath) -> pa.NativeFile:
    """Open a store file for reading without following a symbolic link and without blocking on a FIFO.

    Anything but a regular file raises :class:`StoreDamage`; a missing file raises ``FileNotFoundError``.
    """
    try:
        return storage.open_input(path, follow_links=False)
    except storage.UnreadableFile as error:
        links = " (a store holds no links)" if "symbolic link" in error.reason else ""
        raise StoreDamage(path, error.reason + links) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


@contextlib.contextmanager
def _shard_damage(path: StorePath) -> Iterator[None]:
    """Errors of reading a shard become :class:`StoreDamage` (a missing file stays ``FileNotFoundError``)."""
    try:
        yield
    except (StoreDamage, FileNotFoundError):
        raise
    except storage.UnreadableFile as error:
        raise StoreDamage(path, error.reason) from None
    except (OSError, pa.ArrowException) as error:
        raise StoreDamage(path, f"is not a readable shard ({_first_line(error)})") from None


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


def _read_columns(path: StorePath, columns: list[str], caption_fields: Sequence[str] = ()) -> pa.Table:
    """Whole columns of a shard, plus caption fields as a list per video each (named ``caption_<field>``)."""
    with shard_reader.open_shard(path) as shard:
        version = shard.footer.version
        if version == 1:
            columns = [*columns, *(f"caption_{name}" for name in caption_fields)]
        else:
            columns = [*columns, *(f"captions.list.element.{name}" for name in caption_fields)]
        table = pq.ParquetFile(shard.file, metadata=shard.footer.metadata).read(columns=columns)
    if version == 1 or not caption_fields:
        return table
    lists = table.column("captions").combine_chunks()  # list<struct<the fields>> -> one list<field> each
    items = lists.values.flatten()
    table = table.drop_columns("captions")
    for name in caption_fields:
        values = items[lists.type.value_type.get_field_index(name)]
        table = table.append_column(f"caption_{name}", pa.ListArray.from_arrays(lists.offsets, values))
    return table


@dataclass(frozen=True)
class ShardIndex:
    """What a whole shard holds, per video in row-group order: ids, source paths, durations and ``extra``
    dicts; the extraction identity its metadata records (None for shards written without one); its format."""

    video_ids: list[str]
    source_paths: list[str]
    durations: list[float]
    extras: list[dict]
    extraction: dict | None = None
    format_version: int = LATEST_FORMAT_VERSION


def read_shard_index(path: StorePath) -> ShardIndex:
    """Check that ``path`` is a whole shard and read its small columns; raises :class:`StoreDamage` if not.

    Whole means: a regular file (not a link), a Parquet footer (a torn file has none), the columns and types of
    a store format, one row group per video, distinct non-empty ids, and the ids its metadata lists. Feature
    bytes are not read (``mcn store verify`` reads them).
    """
    with _shard_damage(path), shard_reader.open_shard(path) as shard:
        parquet = pq.ParquetFile(shard.file, metadata=shard.footer.metadata)
        schema = parquet.schema_arrow
        for expected in store_rows.SCHEMAS[shard.footer.version]:
            if schema.get_field_index(expected.name) < 0:
                raise StoreDamage(path, f"lacks the column {expected.name!r}: not a shard of this store")
            if not schema.field(expected.name).type.equals(expected.type):
                raise StoreDamage(path, f"has a column {expected.name!r} of another type")
        table = parquet.read(columns=["video_id", "source_path", "duration", "extra"])
        num_row_groups = shard.footer.metadata.num_row_groups
        version = shard.footer.version
        metadata = schema.metadata or {}
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
    return ShardIndex(video_ids, source_paths, durations, extras, extraction, version)


def shard_video_ids(path: StorePath) -> list[str]:
    """The video ids of a whole shard, in row-group order (see :func:`read_shard_index`)."""
    return read_shard_index(path).video_ids


def shard_captions(path: StorePath) -> tuple[np.ndarray, dict[int, str]]:
    """Captions per video of a shard in row-group order, and {row group: why its caption times are invalid}.

    Reads the two small caption-time columns only; an unreadable shard raises :class:`StoreDamage`.
    """
    try:
        with _shard_damage(path):
            table = _read_columns(path, [], caption_fields=("start", "end"))
    except FileNotFoundError as error:
        raise StoreDamage(path, f"is not a readable shard ({_first_line(error)})") from None
    starts = table.column("caption_start").combine_chunks()
    ends = table.column("caption_end").combine_chunks()
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


def shard_caption_counts(path: StorePath) -> np.ndarray:
    """Captions per video of a shard, in row-group order (reads one small column)."""
    column = _read_columns(path, [], caption_fields=("start",)).column("caption_start")
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
    table = _read_columns(path, ["video_id", "duration"], caption_fields=("token_ids",))
    ids = table.column("caption_token_ids").combine_chunks().flatten().flatten()  # video -> caption -> id
    return ShardSummary(
        video_ids=table.column("video_id").to_pylist(),
        durations=table.column("duration").to_numpy(),
        token_ids=np.unique(ids.to_numpy(zero_copy_only=False)).astype(np.int32),
        nbytes=storage.size(path),
    )


def forget_open_shards(root: StorePath) -> None:
    """Let the next reads of a remote store's shards see the objects as they are now (this process keeps remote
    shards open between reads; a check of the whole store, e.g. before a job resumes, starts afresh)."""
    if storage.is_remote(root):
        shard_reader.forget_remote(str(storage.join(root)))


def list_shards(root: StorePath) -> list[StorePath]:
    """Everything in ``shards/`` named ``shard-NNNNNN.parquet`` (temporary files are never listed); links and
    folders of such a name are listed too, so that whoever reads them finds them damaged."""
    folder = storage.join(root, SHARD_DIR)
    return [storage.join(folder, n) for n in storage.list_names(folder) if _SHARD_NAME.fullmatch(n)]


def shard_number(path: StorePath) -> int:
    """N of ``shard-N.parquet``."""
    match = _SHARD_NAME.fullmatch(storage.name(path))
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
    if not storage.lexists(path):
        raise MCNError(
            f"{root} has no {WORDS}; the store is unfinished: rerun the extraction command to complete it"
        )
    try:
        with open_regular(path) as file:
            table = pq.read_table(file)
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


def write_manifest(root: StorePath, manifest: dict) -> None:
    """Write the dataset manifest (the last file a finished job writes); ``manifest`` may set format_version."""
    write_json_atomic(
        storage.join(root, MANIFEST),
        {"format_version": STORE_FORMAT_VERSION, "features": FEATURE_SPECS, **manifest},
    )


def read_manifest(root: StorePath) -> dict | None:
    """The manifest of a finished store, None when there is none; a damaged one raises :class:`StoreDamage`."""
    path = storage.join(root, MANIFEST)
    if not storage.lexists(path):
        return None
    try:
        with open_regular(path) as file:
            manifest = json.loads(file.read().decode("utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreDamage(path, f"is damaged ({_first_line(error)})") from None
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("video_ids"), list)
        for s in shards
    ):
        raise StoreDamage(path, "is damaged (no list of shards with names and video ids)")
    return manifest


def read_failures(root: StorePath) -> list[dict]:
    """Rows of ``failures.parquet`` (none when it does not exist); a damaged table raises :class:`StoreDamage`."""
    path = storage.join(root, FAILURES)
    return read_failure_table(path) if storage.lexists(path) else []


def read_failure_table(path: StorePath) -> list[dict]:
    """Rows of a failures table (``failures.parquet`` or a job's part file); a damaged one raises
    :class:`StoreDamage`."""
    try:
        with open_regular(path) as file:
            table = pq.read_table(file)
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


def copy_store(source: StorePath, target: StorePath) -> None:
    """Copy every file of a finished store (either end may be a URL), the manifest last: the copy is a finished
    store only once every file is in it."""
    files = [p for p in storage.list_files(source, recursive=True) if storage.relative(p, source) != LOCK]
    for path in sorted(files, key=lambda p: storage.name(p) == MANIFEST):
        storage.copy(path, storage.join(target, *storage.relative(path, source).split("/")))


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
