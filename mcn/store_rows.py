"""One video as one Parquet row group, in store formats 1 and 2: the schemas, and records to and from Arrow.

Format 2 (what :func:`mcn.store.write_shard` writes unless told otherwise) uses only standard Arrow types:

- ``feat_2d``, ``feat_3d``: ``list<fixed_size_list<float16, 2048>>``, one row per frame (T2 or T3 rows);
- ``logmel``: ``list<fixed_size_list<float16, 40>>``, one 40-bin frame per row (time first, like the video
  features; :class:`VideoRecord` keeps its ``(40, Ta)`` shape as a transposed view);
- ``captions``: ``list<struct<start: float32, end: float32, text: string, token_ids: list<int32>>>``;
- the scalars of the probe (``video_id``, ``duration``, …) and ``extra`` (a JSON string).

Format 1 holds each array as raw little-endian bytes plus a ``<name>_shape`` column and the captions as four
parallel lists (``caption_start``, ``caption_end``, ``caption_text``, ``caption_token_ids``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

# name -> (dtype, shape with None for the time axis, rate per second): the arrays of a VideoRecord
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
CAPTION_COLUMNS = ("caption_start", "caption_end", "caption_text", "caption_token_ids")  # format 1
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
META_TYPES = {
    "video_id": pa.string(),
    "source_path": pa.string(),
    "duration": pa.float64(),
    "fps": pa.float64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "has_audio": pa.bool_(),
    "caption_source": pa.string(),
    "extra": pa.string(),  # JSON
}

SCHEMA = pa.schema(  # format 1
    [
        *[(name, META_TYPES[name]) for name in META_COLUMNS],
        *[(name, pa.binary()) for name in ARRAY_COLUMNS],
        *[(f"{name}_shape", pa.list_(pa.int32())) for name in ARRAY_COLUMNS],
        ("caption_start", pa.list_(pa.float32())),
        ("caption_end", pa.list_(pa.float32())),
        ("caption_text", pa.list_(pa.string())),
        ("caption_token_ids", pa.list_(pa.list_(pa.int32()))),
    ]
)


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _list_of(type_: pa.DataType, size: int | None = None) -> pa.DataType:
    item = _required("element", type_)  # Parquet's name for list items, so the read schema is the written one
    return pa.list_(item) if size is None else pa.list_(item, size)


def frames_type(width: int) -> pa.DataType:
    """A feature column of format 2: a list of frames, each a fixed-size float16 vector."""
    return _list_of(_list_of(pa.float16(), width))


FRAME_WIDTH = {"feat_2d": 2048, "feat_3d": 2048, "logmel": 40}  # logmel is stored time-major: (Ta, 40)
CAPTION_FIELDS = [
    _required("start", pa.float32()),
    _required("end", pa.float32()),
    _required("text", pa.string()),
    _required("token_ids", _list_of(pa.int32())),
]
CAPTIONS_TYPE = _list_of(pa.struct(CAPTION_FIELDS))
SCHEMA_V2 = pa.schema(
    [
        *[_required(name, META_TYPES[name]) for name in META_COLUMNS],
        *[_required(name, frames_type(FRAME_WIDTH[name])) for name in ARRAY_COLUMNS],
        _required("captions", CAPTIONS_TYPE),
    ]
)


def _leaf_paths(name: str, type_: pa.DataType) -> list[str]:
    """Parquet column paths of an Arrow field (lists are ``NAME.list.element``)."""
    if pa.types.is_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaf_paths(f"{name}.list.element", type_.value_type)
    if pa.types.is_struct(type_):
        return [
            p
            for i in range(type_.num_fields)
            for p in _leaf_paths(f"{name}.{type_.field(i).name}", type_.field(i).type)
        ]
    return [name]


FEATURE_LEAVES = {name: _leaf_paths(name, frames_type(FRAME_WIDTH[name]))[0] for name in ARRAY_COLUMNS}
# Features stay uncompressed: zstd saves 13-22 % of their bytes but costs as much CPU per video as everything
# else the training loader does. One row group per video makes dictionaries useless; statistics are kept for
# the small columns only (a query engine can skip videos by duration). Data pages v2 hold a video's column in
# one page, which the loader reads in place (mcn.parquet_pages).
PARQUET_OPTIONS_V2 = {
    "compression": {
        leaf: "none" if leaf in FEATURE_LEAVES.values() else "zstd"
        for f in SCHEMA_V2
        for leaf in _leaf_paths(f.name, f.type)
    },
    "use_dictionary": False,
    "data_page_version": "2.0",
    "write_statistics": list(META_COLUMNS),
}
SCHEMAS = {1: SCHEMA, 2: SCHEMA_V2}
PARQUET_OPTIONS = {1: {"compression": "zstd", "compression_level": 1}, 2: PARQUET_OPTIONS_V2}


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


def _checked_array(record: VideoRecord, name: str) -> np.ndarray:
    """A record's array in the stored dtype and shape (zeros with a 0-long time axis when it is missing)."""
    spec = FEATURE_SPECS[name]
    array = getattr(record, name)
    if array is None:
        array = np.zeros([0 if d is None else d for d in spec["shape"]], dtype=spec["dtype"])
    array = np.asarray(array, dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    if array.ndim != len(spec["shape"]) or any(
        d is not None and d != s for d, s in zip(spec["shape"], array.shape)
    ):
        raise ValueError(f"{record.video_id}: {name} has shape {array.shape}, expected {spec['shape']}")
    return array


def _checked_captions(record: VideoRecord) -> tuple[np.ndarray, np.ndarray, list[str], list[np.ndarray]]:
    num_captions = record.num_captions
    texts = list(record.caption_text or [])
    token_ids = [np.asarray(ids, np.int32).reshape(-1) for ids in record.caption_token_ids or []]
    if len(texts) != num_captions or len(token_ids) != num_captions:
        raise ValueError(f"{record.video_id}: caption columns disagree in length")
    empty = np.zeros(0, np.float32)
    starts = empty if record.caption_start is None else np.asarray(record.caption_start, np.float32)
    ends = empty if record.caption_end is None else np.asarray(record.caption_end, np.float32)
    if len(ends) != num_captions:
        raise ValueError(f"{record.video_id}: caption columns disagree in length")
    return starts, ends, texts, token_ids


def _meta_row(record: VideoRecord) -> dict:
    return {
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


def record_to_table(record: VideoRecord, version: int, schema: pa.Schema) -> pa.Table:
    """A one-row table of ``schema`` (format ``version``'s, with the shard's metadata) holding ``record``."""
    if version == 1:
        return pa.Table.from_pylist([_row_v1(record)], schema=schema)
    return _table_v2(record, schema)


def record_from_table(table: pa.Table, version: int) -> VideoRecord:
    """The first row of a one-row-group table as a record, except format 2's features (read apart)."""
    record = VideoRecord(video_id=table.column("video_id")[0].as_py())
    for name in META_COLUMNS:
        if name in table.column_names:
            value = table.column(name)[0].as_py()
            setattr(record, name, json.loads(value) if name == "extra" else value)
    if version == 1:
        _arrays_from_table_v1(record, table)
    elif "captions" in table.column_names:
        _captions_into(record, table.column("captions"))
    return record


# ---- format 2 ------------------------------------------------------------------------------------------------


def _one_list(values: pa.Array, type_: pa.DataType, length: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0, length], pa.int32()), values, type=type_)


def _table_v2(record: VideoRecord, schema: pa.Schema) -> pa.Table:
    columns = {name: pa.array([value], META_TYPES[name]) for name, value in _meta_row(record).items()}
    for name in ARRAY_COLUMNS:
        frames_TD = _checked_array(record, name)
        if name == "logmel":
            frames_TD = frames_TD.T  # (Ta, 40): one row per frame, like the video features
        frames_TD = np.ascontiguousarray(frames_TD)
        type_ = frames_type(FRAME_WIDTH[name])
        frames = pa.FixedSizeListArray.from_arrays(pa.array(frames_TD.reshape(-1)), type=type_.value_type)
        columns[name] = _one_list(frames, type_, len(frames_TD))
    starts, ends, texts, token_ids = _checked_captions(record)
    lengths = np.array([len(ids) for ids in token_ids], np.int32)
    token_lists = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
        pa.array(np.concatenate(token_ids) if token_ids else np.zeros(0, np.int32), pa.int32()),
        type=CAPTION_FIELDS[3].type,
    )
    captions = pa.StructArray.from_arrays(
        [pa.array(starts), pa.array(ends), pa.array(texts, pa.string()), token_lists], fields=CAPTION_FIELDS
    )
    columns["captions"] = _one_list(captions, CAPTIONS_TYPE, len(starts))
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def frames_from_values(values: np.ndarray, name: str) -> np.ndarray:
    """A format-2 feature's record array from its flat values (a view: logmel as (40, Ta))."""
    frames_TD = values.reshape(-1, FRAME_WIDTH[name])
    return frames_TD.T if name == "logmel" else frames_TD  # logmel as (40, Ta), a view


def feature_from_arrow(column: pa.ChunkedArray) -> np.ndarray:
    """The flat values of a one-row format-2 feature column, as Arrow decoded it (zero-copy)."""
    values = column.combine_chunks().flatten().flatten()
    return values.to_numpy(zero_copy_only=values.null_count == 0)


def _captions_into(record: VideoRecord, column: pa.ChunkedArray) -> None:
    items = column.combine_chunks().flatten()  # the row's captions: a struct array
    starts, ends, texts, token_lists = items.flatten()
    record.caption_start = starts.to_numpy()
    record.caption_end = ends.to_numpy()
    record.caption_text = texts.to_pylist()
    offsets = token_lists.offsets.to_numpy()
    values = token_lists.flatten().to_numpy()
    record.caption_token_ids = _split(values, offsets)


def _split(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Views of ``values`` between consecutive list offsets (which may start above 0)."""
    return np.split(values, offsets[1:-1] - offsets[0]) if len(offsets) > 1 else []


# ---- format 1 ------------------------------------------------------------------------------------------------


def _row_v1(record: VideoRecord) -> dict:
    row = _meta_row(record)
    for name in ARRAY_COLUMNS:
        array = np.ascontiguousarray(_checked_array(record, name))
        row[name] = array.tobytes()
        row[f"{name}_shape"] = list(array.shape)
    starts, ends, texts, token_ids = _checked_captions(record)
    row["caption_start"] = starts.tolist()
    row["caption_end"] = ends.tolist()
    row["caption_text"] = texts
    row["caption_token_ids"] = [ids.tolist() for ids in token_ids]
    return row


def _arrays_from_table_v1(record: VideoRecord, table: pa.Table) -> None:
    names = set(table.column_names)
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
        offsets = token_lists.offsets.to_numpy()
        values = token_lists.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        record.caption_token_ids = _split(values, offsets)


# ---- projections ----------------------------------------------------------------------------------------------


def columns_for(fields: Sequence[str] | None, version: int) -> tuple[list[str], list[str]]:
    """(features, other Parquet columns) for a projection of VideoRecord fields (None = everything)."""
    fields = list(META_COLUMNS) + list(ARRAY_COLUMNS) + ["captions"] if fields is None else fields
    features, columns = [], ["video_id"]
    for name in fields:
        if name in ARRAY_COLUMNS:
            features.append(name)
        elif name == "captions":
            columns += list(CAPTION_COLUMNS) if version == 1 else ["captions"]
        elif name in META_COLUMNS:
            columns.append(name)
        else:
            raise ValueError(
                f"unknown store field {name!r}; use {list(META_COLUMNS) + list(ARRAY_COLUMNS) + ['captions']}"
            )
    if version == 1:
        columns += [c for name in features for c in (name, f"{name}_shape")]
        features = []
    return list(dict.fromkeys(features)), list(dict.fromkeys(columns))
