"""The values of a one-row Parquet column chunk, read straight from its single data page as a numpy array.

Arrow's Parquet reader rebuilds a nested list from a repetition and a definition level per value, which costs
several nanoseconds per float: for the store's feature columns (a list of fixed-size lists of float16 per video)
that is about three times the cost of reading the bytes. When a row group holds one row, the values of a
column are simply the PLAIN-encoded bytes of its data page, so :func:`read_values` takes the column chunk's
bytes (read by the caller, see :func:`chunk_range`), checks the page header (Parquet's Thrift compact
encoding) against every assumption, and views the values in place: no level decoding and, for an
uncompressed page, no copy (:func:`values_offset` tells the caller where to place the bytes so that the values
start aligned). Anything else (dictionary pages, several pages, v1 pages, other encodings, unknown codecs)
gives ``None`` and the caller reads the column with Arrow instead. This module does no I/O.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Parquet codec name -> pyarrow codec name (None: stored uncompressed)
CODECS = {
    "UNCOMPRESSED": None,
    "ZSTD": "zstd",
    "SNAPPY": "snappy",
    "GZIP": "gzip",
    "BROTLI": "brotli",
    "LZ4_RAW": "lz4_raw",
}
DATA_PAGE_V2 = 3  # PageType
PLAIN = 0  # Encoding

# PageHeader / DataPageHeaderV2 field ids (parquet.thrift)
PAGE_TYPE, UNCOMPRESSED_SIZE, COMPRESSED_SIZE, DATA_PAGE_HEADER_V2 = 1, 2, 3, 8
V2_NUM_VALUES, V2_NUM_NULLS, V2_NUM_ROWS, V2_ENCODING = 1, 2, 3, 4
V2_DEF_LEVELS_BYTES, V2_REP_LEVELS_BYTES, V2_IS_COMPRESSED = 5, 6, 7


def chunk_range(column: pq.ColumnChunkMetaData) -> tuple[int, int]:
    """(file offset, length) of a column chunk's bytes, dictionary page included."""
    start = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset is not None:
        start = min(start, column.dictionary_page_offset)
    return start, column.total_compressed_size


def values_offset(column: pq.ColumnChunkMetaData, itemsize: int) -> int | None:
    """Where the values of an uncompressed one-page chunk start, relative to the chunk (None: cannot tell).

    A reader uses it to place the chunk in memory so that the values come out aligned (a view, not a copy).
    """
    if CODECS.get(column.compression, "unknown") is not None or column.has_dictionary_page:
        return None
    offset = column.total_compressed_size - column.num_values * itemsize
    return offset if offset >= 0 else None


def read_values(chunk: pa.Buffer, column: pq.ColumnChunkMetaData, dtype: np.dtype) -> np.ndarray | None:
    """The non-null leaf values of a one-row column chunk (``chunk``: its bytes) as a 1-D array of ``dtype``.

    A view of ``chunk`` when the page is uncompressed and the values are aligned in memory, else a new array;
    None when the chunk is not one PLAIN data page v2 of one row (read it with Arrow instead).
    """
    dtype = np.dtype(dtype)
    if (
        column.has_dictionary_page
        or column.compression not in CODECS
        or chunk.size != column.total_compressed_size
    ):
        return None
    codec = CODECS[column.compression]
    try:
        header, body = _struct(memoryview(chunk).cast("B"), 0)
    except (IndexError, ValueError):
        return None
    page = header.get(DATA_PAGE_HEADER_V2)
    if header.get(PAGE_TYPE) != DATA_PAGE_V2 or not isinstance(page, dict):
        return None
    compressed_size = header.get(COMPRESSED_SIZE, -1)
    if body + compressed_size != chunk.size or page.get(V2_ENCODING) != PLAIN or page.get(V2_NUM_ROWS) != 1:
        return None  # more than one page (or row), or not PLAIN
    levels = page.get(V2_DEF_LEVELS_BYTES, 0) + page.get(V2_REP_LEVELS_BYTES, 0)
    values_size = header.get(UNCOMPRESSED_SIZE, -1) - levels
    stored = chunk.slice(body + levels, compressed_size - levels)
    if codec is not None and page.get(V2_IS_COMPRESSED, True):
        values = pa.decompress(stored, decompressed_size=values_size, codec=codec)
    else:
        values = stored
    num_values = page.get(V2_NUM_VALUES, -1) - page.get(V2_NUM_NULLS, 0)
    if values.size != values_size or values_size != num_values * dtype.itemsize:
        return None
    array = np.frombuffer(values, dtype=dtype)
    return array if array.flags.aligned else array.copy()


# ---- Thrift compact protocol (only what a page header uses) ----------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _value(buf: memoryview, pos: int, kind: int) -> tuple[object, int]:
    if kind in (1, 2):  # booleans live in the type nibble
        return kind == 1, pos
    if kind == 3:  # i8
        return buf[pos], pos + 1
    if kind in (4, 5, 6):  # i16, i32, i64
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if kind == 7:  # double
        return None, pos + 8
    if kind == 8:  # binary: skipped (statistics)
        length, pos = _varint(buf, pos)
        return None, pos + length
    if kind in (9, 10):  # list, set
        head = buf[pos]
        pos += 1
        count, item_kind = head >> 4, head & 0x0F
        if count == 15:
            count, pos = _varint(buf, pos)
        items = []
        for _ in range(count):
            if item_kind in (1, 2):  # list booleans take one byte each
                items.append(buf[pos] == 1)
                pos += 1
            else:
                item, pos = _value(buf, pos, item_kind)
                items.append(item)
        return items, pos
    if kind == 12:
        return _struct(buf, pos)
    raise ValueError(f"Thrift type {kind} is not used by Parquet page headers")


def _struct(buf: memoryview, pos: int) -> tuple[dict[int, object], int]:
    """A Thrift compact struct at ``pos`` as {field id: value}, and the position after it."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, kind = head >> 4, head & 0x0F
        if delta:
            field_id = last + delta
        else:
            raw, pos = _varint(buf, pos)
            field_id = _zigzag(raw)
        fields[field_id], pos = _value(buf, pos, kind)
        last = field_id
