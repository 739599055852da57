"""Reading a one-row column chunk's values straight from its data page, checked against Arrow's own reader."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mcn import parquet_pages


def frames_table(rows_TD: list[np.ndarray]) -> pa.Table:
    """One row per array: a list of fixed-size float16 frames, like the store's feature columns."""
    width = rows_TD[0].shape[1]
    frame = pa.list_(pa.field("element", pa.float16(), nullable=False), width)
    column = pa.list_(pa.field("element", frame, nullable=False))
    offsets = np.cumsum([0] + [len(r) for r in rows_TD]).astype(np.int32)
    values = pa.array(np.concatenate([r.reshape(-1) for r in rows_TD]))
    array = pa.ListArray.from_arrays(
        pa.array(offsets), pa.FixedSizeListArray.from_arrays(values, type=frame), type=column
    )
    return pa.Table.from_arrays([array], schema=pa.schema([pa.field("x", column, nullable=False)]))


def write(path, rows_TD, rows_per_group=1, **options):
    table = frames_table(rows_TD)
    options = {"use_dictionary": False, "data_page_version": "2.0", "compression": "none", **options}
    pq.write_table(table, path, row_group_size=rows_per_group, **options)
    return pq.ParquetFile(path).metadata


def chunk_bytes(path, column, pad=0):
    start, length = parquet_pages.chunk_range(column)
    with open(path, "rb") as f:
        f.seek(start - pad)
        return pa.py_buffer(f.read(length + pad)).slice(pad)


@pytest.fixture
def videos():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((t, 40)).astype(np.float16) for t in (3, 1, 250)] + [
        np.zeros((0, 40), np.float16)
    ]


@pytest.mark.parametrize("compression", ["none", "zstd", "snappy"])
def test_values_equal_arrows_decoding(tmp_path, videos, compression):
    path = tmp_path / "x.parquet"
    metadata = write(path, videos, compression=compression)
    arrow = pq.ParquetFile(path)
    for row_group, expected in enumerate(videos):
        column = metadata.row_group(row_group).column(0)
        values = parquet_pages.read_values(chunk_bytes(path, column), column, np.float16)
        assert values is not None, "the layout the store writes takes the direct path"
        decoded = arrow.read_row_group(row_group).column(0).combine_chunks().flatten().flatten()
        np.testing.assert_array_equal(values, decoded.to_numpy())
        np.testing.assert_array_equal(values.reshape(-1, 40), expected)


def test_uncompressed_values_are_views_when_aligned_and_copies_otherwise(tmp_path, videos):
    path = tmp_path / "x.parquet"
    column = write(path, videos).row_group(2).column(0)
    offset = parquet_pages.values_offset(column, 2)
    assert offset is not None
    for pad in (0, 1):
        data = chunk_bytes(path, column, pad=pad)  # the chunk `pad` bytes past an aligned address
        values = parquet_pages.read_values(data, column, np.float16)
        np.testing.assert_array_equal(values.reshape(-1, 40), videos[2])
        assert values.flags.aligned
        view = np.shares_memory(values, np.frombuffer(data, np.uint8))
        assert view == ((pad + offset) % 2 == 0), "values_offset says where to place the bytes for a view"


@pytest.mark.parametrize(
    "options",
    [
        {"data_page_version": "1.0"},  # levels inside the page
        {"use_dictionary": True},  # dictionary page first
        {"column_encoding": {"x.list.element.list.element": "BYTE_STREAM_SPLIT"}},
    ],
)
def test_other_layouts_are_left_to_arrow(tmp_path, videos, options):
    path = tmp_path / "x.parquet"
    metadata = write(path, videos, **options)
    column = metadata.row_group(0).column(0)
    assert parquet_pages.read_values(chunk_bytes(path, column), column, np.float16) is None


def test_a_row_group_of_several_rows_is_left_to_arrow(tmp_path, videos):
    path = tmp_path / "x.parquet"
    column = write(path, videos, rows_per_group=2).row_group(0).column(0)
    assert parquet_pages.read_values(chunk_bytes(path, column), column, np.float16) is None


def test_bytes_that_are_not_the_chunk_are_refused(tmp_path, videos):
    path = tmp_path / "x.parquet"
    column = write(path, videos).row_group(0).column(0)
    data = chunk_bytes(path, column)
    assert parquet_pages.read_values(data.slice(1), column, np.float16) is None
    garbage = pa.py_buffer(b"\xff" * data.size)
    assert parquet_pages.read_values(garbage, column, np.float16) is None
