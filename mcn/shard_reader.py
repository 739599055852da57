"""Reading shards: footers kept per shard, a row group's bytes in as few reads as make sense, features in place.

A local shard is opened for each read (never through a symbolic link: :func:`mcn.storage.open_input` with
``follow_links=False``) and its footer reused while the file's size and modification time are unchanged; a
remote shard stays open (objects of a store are written once, so the next read costs only its own request). The wanted column chunks of a row group are fetched first (:class:`RowGroupBytes`); Arrow decodes
the small columns from them, and the features of format 2 are viewed in place (:mod:`mcn.parquet_pages`), or
decoded by Arrow when a shard was written some other way.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mcn import parquet_pages, storage, store_rows
from mcn.storage import StorePath
from mcn.store_rows import FEATURE_SPECS, VideoRecord


@dataclass(frozen=True)
class Footer:
    """What reading a shard needs from its footer (cached: shards are written once and never changed)."""

    metadata: pq.FileMetaData
    version: int
    leaves: dict[str, list[int]]  # top-level column -> indices of its Parquet (leaf) columns


@dataclass(frozen=True)
class Shard:
    """An open shard: its file, footer, and a lock for reads that seek (a remote file is shared by threads)."""

    file: pa.NativeFile
    footer: Footer
    lock: threading.Lock
    remote: bool


_CACHE_SIZE = 256
_footers: OrderedDict[tuple, Footer] = OrderedDict()  # local shards, by (path, size, mtime)
_remote_shards: OrderedDict[tuple, Shard] = OrderedDict()  # by (process, URL)
_cache_lock = threading.Lock()


def _read_footer(file: pa.NativeFile) -> Footer:
    metadata = pq.ParquetFile(file).metadata
    leaves: dict[str, list[int]] = {}
    for index in range(metadata.num_columns):
        leaves.setdefault(metadata.schema.column(index).path.split(".")[0], []).append(index)
    return Footer(metadata, 2 if "captions" in leaves else 1, leaves)


def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
    with _cache_lock:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


@contextlib.contextmanager
def open_shard(path: StorePath) -> Iterator[Shard]:
    """A shard ready to read (see the module's docstring for what is kept between reads)."""
    if storage.is_remote(path):
        key = (os.getpid(), str(path))  # a forked process opens its own
        shard = _remote_shards.get(key)
        if shard is None:
            file = storage.open_input(path)
            shard = Shard(file, _read_footer(file), threading.Lock(), remote=True)
            _remember(_remote_shards, key, shard)
        yield shard
        return
    with storage.open_input(path, follow_links=False) as file:
        key = (str(path), file.size(), storage.modified_ns(path))
        footer = _footers.get(key)
        if footer is None:
            footer = _read_footer(file)
            _remember(_footers, key, footer)
        yield Shard(file, footer, threading.Lock(), remote=False)


def forget_remote(prefix: str) -> None:
    """Close and drop this process's open remote shards below ``prefix``, so that the next reads see the
    objects as they are now (a check of a whole store, after another tool may have replaced objects)."""
    prefix = prefix.rstrip("/") + "/"
    with _cache_lock:
        for key in [k for k in _remote_shards if k[1].startswith(prefix)]:
            shard = _remote_shards.pop(key)
            with contextlib.suppress(Exception):
                shard.file.close()


# Reading a gap this small between two wanted column chunks of a remote shard costs less client CPU than one
# more request (about a millisecond, as much as receiving ~1 MB).
MAX_GAP_BYTES = 256 << 10
ITEMSIZE = 2  # float16, every feature's element type


class RowGroupBytes(io.RawIOBase):
    """A shard file whose wanted byte ranges are in memory: Arrow reads through it, features are views of it.

    Local files get one read per feature chunk, placed so that its values start aligned (a view, no copy),
    and one per run of other chunks; remote files get as few requests as the gaps allow, placed to align the
    largest feature (the others are copied once if they come out misaligned). Other reads go to the file.
    """

    def __init__(self, shard: Shard, chunks: list[pq.ColumnChunkMetaData], features: set[int]):
        self.shard, self.file, self.position, self.ranges = shard, shard.file, 0, []
        remote = shard.remote
        spans = sorted((*parquet_pages.chunk_range(c), i) for i, c in enumerate(chunks))
        group: list[tuple[int, int, int]] = []
        for span in spans:
            if group:
                gap = span[0] - (group[-1][0] + group[-1][1])
                apart = not remote and (span[2] in features or group[-1][2] in features)
                if gap > (MAX_GAP_BYTES if remote else 0) or apart:
                    self._read(group, chunks, features)
                    group = []
            group.append(span)
        if group:
            self._read(group, chunks, features)

    def _read(self, group: list[tuple[int, int, int]], chunks: list, features: set[int]) -> None:
        start, end = group[0][0], max(s + n for s, n, _ in group)
        pad = 0
        in_group = [(n, s, i) for s, n, i in group if i in features]
        if in_group:
            _, chunk_start, index = max(in_group)
            offset = parquet_pages.values_offset(chunks[index], ITEMSIZE)
            if offset is not None:
                pad = min((-(chunk_start - start + offset)) % ITEMSIZE, start)
        self.ranges.append((start - pad, self._read_at(start - pad, end - start + pad)))

    def _read_at(self, start: int, length: int) -> pa.Buffer:
        with self.shard.lock:  # read_at would copy into bytes; read_buffer needs a seek first
            self.file.seek(start)
            return self.file.read_buffer(length)

    def slice(self, start: int, length: int) -> pa.Buffer | None:
        for first, data in self.ranges:
            if first <= start and start + length <= first + data.size:
                return data.slice(start - first, length)
        return None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.file.size()}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> pa.Buffer:
        """The next ``size`` bytes, a slice of the buffers already read when they hold them (no copy)."""
        remaining = self.file.size() - self.position
        length = remaining if size < 0 else min(size, remaining)
        data = self.slice(self.position, length)
        if data is None:
            data = self._read_at(self.position, length)
        self.position += data.size
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: data.size] = memoryview(data).cast("B")
        return data.size


def read_row_group(shard: Shard, row_group: int, fields: Sequence[str] | None) -> VideoRecord:
    footer = shard.footer
    features, columns = store_rows.columns_for(fields, footer.version)
    chunks = footer.metadata.row_group(row_group)
    wanted = [i for name in [*columns, *features] for i in footer.leaves[name]]
    feature_leaves = {wanted.index(footer.leaves[name][0]) for name in features}
    data = RowGroupBytes(shard, [chunks.column(i) for i in wanted], feature_leaves)
    source = pa.PythonFile(data, mode="r")
    table = pq.ParquetFile(source, metadata=footer.metadata).read_row_group(row_group, columns=columns)
    record = store_rows.record_from_table(table, footer.version)
    for name in features:
        dtype = np.dtype(FEATURE_SPECS[name]["dtype"])
        column = chunks.column(footer.leaves[name][0])
        chunk = data.slice(*parquet_pages.chunk_range(column))
        values = None if chunk is None else parquet_pages.read_values(chunk, column, dtype)
        if values is None:  # not the layout write_shard makes: let Arrow decode it
            one = pq.ParquetFile(source, metadata=footer.metadata).read_row_group(row_group, columns=[name])
            values = store_rows.feature_from_arrow(one.column(name)).astype(dtype, copy=False)
        setattr(record, name, store_rows.frames_from_values(values, name))
    return record
