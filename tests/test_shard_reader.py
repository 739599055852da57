"""Reading shards: one row group's bytes only, footers reused (and checked), remote shards kept open, shards
written by other tools decoded by Arrow."""

import pyarrow as pa
import pyarrow.parquet as pq
from store_formats import assert_same_record, finished_store

from mcn import storage, store


class CountingFile:
    """A local file that records every byte range read from it."""

    def __init__(self, path):
        self.file, self.reads = open(path, "rb"), []  # noqa: SIM115 (closed by pyarrow)
        self.closed = False

    def read(self, size=-1):
        start = self.file.tell()
        data = self.file.read(size)
        self.reads.append((start, len(data)))
        return data

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_reading_one_video_reads_only_its_row_group(tmp_path, monkeypatch):
    finished_store(tmp_path, [["a", "b", "c", "d"]])
    path = tmp_path / "shards" / store.shard_name(0)
    metadata = pq.ParquetFile(path).metadata
    store.read_shard_video(path, 0)  # the footer is read once per shard and kept
    opened = []

    def counting_open(where, follow_links=True):
        opened.append(CountingFile(where))
        return pa.PythonFile(opened[-1], mode="r")

    monkeypatch.setattr(storage, "open_input", counting_open)
    record = store.read_shard_video(path, 2)
    assert record.video_id == "c"
    group = metadata.row_group(2)
    first = min(group.column(i).data_page_offset for i in range(group.num_columns))
    last = max(
        group.column(i).data_page_offset + group.column(i).total_compressed_size
        for i in range(group.num_columns)
    )
    reads = opened[0].reads
    assert reads and all(first - 1 <= start and start + length <= last for start, length in reads), reads
    assert sum(n for _, n in reads) <= last - first + 1 < path.stat().st_size / 2


def test_shards_rewritten_by_other_tools_are_still_read(tmp_path):
    records = finished_store(tmp_path, [["a", "b", "c"]])
    path = tmp_path / "shards" / store.shard_name(0)
    table = pq.read_table(path)
    # what a generic tool writes: v1 pages, compressed, dictionaries, its own row groups of one video
    pq.write_table(table, path, row_group_size=1, compression="zstd")
    reader = store.StoreReader(tmp_path)
    for video_id, expected in records.items():
        assert_same_record(reader.read(video_id), expected)


def test_a_rewritten_local_shard_is_read_afresh(tmp_path):
    records = finished_store(tmp_path, [["a", "b"]])
    path = tmp_path / "shards" / store.shard_name(0)
    assert store.read_shard_video(path, 1).video_id == "b"
    store.write_shard(path, [records["b"], records["a"]], format_version=2)
    assert store.read_shard_video(path, 1).video_id == "a", "the cached footer is checked against the file"


def test_a_remote_shard_is_opened_once_per_process(s3_bucket, monkeypatch):
    root = f"{s3_bucket}/store"
    records = finished_store(root, [["a", "b", "c"]])
    opened = []
    real_open = storage.open_input
    monkeypatch.setattr(
        storage, "open_input", lambda path, follow_links=True: (opened.append(path), real_open(path))[1]
    )
    reader = store.StoreReader(root)
    for video_id in ["a", "b", "c", "a"]:
        assert_same_record(reader.read(video_id), records[video_id])
    assert opened.count(reader.shard_paths[0]) == 1, "one HEAD and one footer read for all four reads"
