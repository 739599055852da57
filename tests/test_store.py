"""The store: round trips in both formats (local and s3://), format-1 stores read and migrated, projections,
the word table and the manifest; the same training clips from both formats; other tools read format 2 without mcn."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from store_formats import assert_same_record, finished_store, make_record, write_format1_shard

from mcn import storage, store
from mcn.errors import MCNError
from mcn.train.clips import ClipOptions
from mcn.train.data import TrainLoader


@pytest.mark.parametrize("format_version", [1, 2])
def test_round_trip_and_row_group_per_video(tmp_path, format_version):
    records = finished_store(tmp_path, [["a", "b", "c"], ["d"]], format_version)
    reader = store.StoreReader(tmp_path)
    assert sorted(reader.video_ids) == ["a", "b", "c", "d"] and reader.format_version == format_version
    assert pq.ParquetFile(tmp_path / "shards" / store.shard_name(0)).num_row_groups == 3
    for video_id, expected in records.items():
        assert_same_record(reader.read(video_id), expected)
    assert [r.video_id for r in reader.iter_videos()] == ["a", "b", "c", "d"]
    first = reader.shard_paths[0]
    assert store.shard_format(first) == format_version
    assert store.shard_video_ids(first) == ["a", "b", "c"]
    assert store.shard_caption_counts(first).tolist() == [2, 2, 2]
    counts, problems = store.shard_captions(first)
    assert counts.tolist() == [2, 2, 2] and problems == {}
    index = store.read_shard_index(first)
    assert index.durations == [3.0, 4.0, 5.0] and index.extras == [{"codec": "h264"}] * 3
    assert index.source_paths == ["/videos/a.mp4", "/videos/b.mp4", "/videos/c.mp4"]
    summary = store.shard_summary(first)
    assert summary.token_ids.tolist() == [1, 3, 7] and summary.durations.tolist() == [3.0, 4.0, 5.0]


@pytest.mark.parametrize("format_version", [1, 2])
def test_shards_are_read_only_when_whole_and_never_through_a_link(tmp_path, format_version):
    finished_store(tmp_path, [["a", "b"]], format_version)
    shards = tmp_path / store.SHARD_DIR
    (shards / store.shard_name(1)).symlink_to(shards / store.shard_name(0))
    (shards / store.shard_name(2)).mkdir()
    torn = shards / store.shard_name(3)
    torn.write_bytes((shards / store.shard_name(0)).read_bytes()[:-100])
    assert [p.name for p in store.list_shards(tmp_path)] == [store.shard_name(i) for i in range(4)]
    assert store.read_shard_index(shards / store.shard_name(0)).video_ids == ["a", "b"]
    for index, reason in [
        (1, "is a symbolic link"),
        (2, "is not a regular file"),
        (3, "not a readable shard"),
    ]:
        with pytest.raises(store.StoreDamage, match=reason):
            store.read_shard_index(shards / store.shard_name(index))
    with pytest.raises(MCNError, match="symbolic link"):
        store.read_shard_video(shards / store.shard_name(1), 0)
    with pytest.raises(store.StoreDamage, match="not a readable shard"):
        store.shard_captions(torn)


def test_format_2_round_trip_on_an_object_store(s3_bucket):
    root = f"{s3_bucket}/stores/demo"
    records = finished_store(root, [["a", "b"], ["c"]])
    reader = store.StoreReader(root)
    assert reader.shard_paths == [
        f"{root}/shards/shard-000000.parquet",
        f"{root}/shards/shard-000001.parquet",
    ]
    assert store.list_shards(root) == reader.shard_paths
    assert store.read_shard_index(reader.shard_paths[0]).video_ids == ["a", "b"]
    assert store.shard_captions(reader.shard_paths[1])[0].tolist() == [2]
    for video_id, expected in records.items():
        assert_same_record(reader.read(video_id), expected)
    assert reader.words.words == ["the", "cut", "onion"] and reader.failures() == []
    assert json.loads(storage.read_bytes(f"{root}/{store.MANIFEST}"))["format_version"] == 2


def test_format_2_uses_standard_column_types(tmp_path):
    finished_store(tmp_path, [["a"]])
    schema = pq.read_schema(tmp_path / "shards" / store.shard_name(0))
    assert not [f.name for f in schema if pa.types.is_binary(f.type)], "no opaque bytes"
    assert (
        str(schema.field("feat_2d").type.value_type) == "fixed_size_list<element: halffloat not null>[2048]"
    )
    assert str(schema.field("logmel").type.value_type) == "fixed_size_list<element: halffloat not null>[40]"
    captions = schema.field("captions").type.value_type
    assert [captions.field(i).name for i in range(captions.num_fields)] == [
        "start",
        "end",
        "text",
        "token_ids",
    ]


@pytest.mark.parametrize("format_version", [1, 2])
def test_projection_reads_only_asked_columns(tmp_path, format_version):
    finished_store(tmp_path, [["a", "b"]], format_version)
    got = store.StoreReader(tmp_path).read("b", fields=["captions", "duration"])
    assert got.feat_2d is None and got.logmel is None
    assert got.duration == 4.0 and got.caption_text == ["cut the onion", "stir it"]
    only_audio = store.StoreReader(tmp_path).read("a", fields=["logmel"])
    assert only_audio.logmel.shape == (40, 300) and only_audio.caption_start is None
    with pytest.raises(ValueError, match="unknown store field"):
        store.StoreReader(tmp_path).read("b", fields=["pixels"])


@pytest.mark.parametrize("format_version", [1, 2])
def test_unfinished_store_and_bad_shapes_are_clear_errors(tmp_path, format_version):
    with pytest.raises(MCNError, match="does not exist"):
        store.StoreReader(tmp_path / "nothing")
    with pytest.raises(MCNError, match="not a finished store"):
        store.StoreReader(tmp_path)
    bad = make_record("x", 3, np.random.default_rng(0))
    bad.feat_2d = np.zeros((3, 512), np.float16)
    with pytest.raises(ValueError, match="feat_2d has shape"):
        store.write_shard(tmp_path / "shards" / store.shard_name(0), [bad], format_version=format_version)
    assert store.list_shards(tmp_path) == [], "a failed write must leave no shard behind"
    assert not list((tmp_path / "shards").iterdir()), "a failed write must leave no temporary file behind"


def test_a_store_of_a_newer_format_is_refused(tmp_path):
    finished_store(tmp_path, [["a"]])
    store.write_manifest(tmp_path, {"format_version": 3, "shards": []})
    with pytest.raises(MCNError, match="store format 3"):
        store.StoreReader(tmp_path)


def test_words_lookup(tmp_path):
    finished_store(tmp_path, [["a"]])
    words = store.StoreReader(tmp_path).words
    assert words.token_ids.tolist() == [1, 3, 7] and words.words == ["the", "cut", "onion"]
    vectors = words.lookup(np.array([[7, 3]]))
    assert vectors.shape == (1, 2, 4)
    np.testing.assert_array_equal(vectors[0, 0], np.eye(3, 4)[0])
    with pytest.raises(KeyError):
        words.lookup(np.array([2]))


def test_manifest_records_format_and_features(tmp_path):
    store.write_manifest(tmp_path, {"shards": []})
    manifest = json.loads((tmp_path / store.MANIFEST).read_text())
    assert manifest["format_version"] == store.STORE_FORMAT_VERSION
    assert manifest["features"]["feat_3d"]["rate_hz"] == 1.5


def test_training_clips_are_bit_identical_in_both_formats(tmp_path):
    rng = np.random.default_rng(4)
    videos = []
    for index in range(6):
        record = make_record(f"v{index}", 20 + index, rng)
        starts = np.sort(rng.uniform(0, 18, 5)).astype(np.float32)
        record.caption_start, record.caption_end = starts, starts + 2
        record.caption_text = [f"caption {i}" for i in range(5)]
        record.caption_token_ids = [
            rng.choice(np.array([1, 3, 7], np.int32), rng.integers(0, 6)) for _ in range(5)
        ]
        videos.append(record)
    batches = {}
    for version in (1, 2):
        root = tmp_path / f"format{version}"
        path = root / store.SHARD_DIR / store.shard_name(0)
        if version == 1:
            write_format1_shard(path, videos)
        else:
            store.write_shard(path, videos, format_version=2)
        store.write_words(root, np.array([7, 1, 3]), ["onion", "the", "cut"], np.eye(3, 4, dtype=np.float32))
        shards = [{"name": path.name, "video_ids": [v.video_id for v in videos]}]
        store.write_manifest(root, {"format_version": version, "shards": shards})
        loader = TrainLoader(
            root, ClipOptions(num_clips=4, min_time=3.0, max_frames=200, max_words=5), 2, seed=3
        )
        batches[version] = list(loader)
    assert len(batches[1]) == len(batches[2]) == 3
    for one, two in zip(batches[1], batches[2]):
        assert one.keys() == two.keys()
        for name in one:
            assert one[name].dtype == two[name].dtype and torch.equal(one[name], two[name]), name


# ---- migration ---------------------------------------------------------------------------------------------


def test_migrate_converts_each_shard_exactly_once_and_resumes(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    records = finished_store(old, [["a", "b"], ["c"], ["d", "e"]], format_version=1)
    storage.write_bytes(old / "extraction.json", b'{"model_2d": "resnet152"}')
    storage.write_bytes(old / "benchmarks" / "youcook2.csv", b"video_id,start,end,text\n")
    real_write = store.write_shard
    written: list[str] = []  # shards whose conversion started

    def dying_write(path, videos, *args, **kwargs):
        written.append(storage.name(path))
        if len(written) == 2:  # the second shard's conversion dies after its first video

            def die(source=iter(videos)):
                yield next(source)
                raise RuntimeError("killed")

            videos = die()
        return real_write(path, videos, *args, **kwargs)

    monkeypatch.setattr(store, "write_shard", dying_write)
    with pytest.raises(RuntimeError, match="killed"):
        store.migrate_store(old, new)
    assert [p.name for p in (new / "shards").iterdir()] == [store.shard_name(0)], "only whole shards appear"
    with pytest.raises(MCNError, match="not a finished store"):
        store.StoreReader(new)  # no manifest until everything is there
    first = new / "shards" / store.shard_name(0)
    first_written = first.stat().st_mtime_ns

    written.clear()
    monkeypatch.setattr(
        store, "write_shard", lambda *a, **k: (written.append(storage.name(a[0])), real_write(*a, **k))[1]
    )
    done = store.migrate_store(old, new)
    assert done == {"shards_converted": 2, "shards_kept": 1, "files_copied": 3}
    assert written == [store.shard_name(1), store.shard_name(2)], "the rerun converts only what is missing"
    assert first.stat().st_mtime_ns == first_written
    reader = store.StoreReader(new)
    assert reader.format_version == 2 and reader.manifest["migrated_from"]["format_version"] == 1
    assert reader.manifest["counts"]["bytes"] == sum(storage.size(p) for p in reader.shard_paths)
    assert all(store.shard_format(p) == 2 for p in reader.shard_paths)
    for video_id, expected in records.items():
        assert_same_record(reader.read(video_id), expected)
    assert (new / "extraction.json").read_bytes() == b'{"model_2d": "resnet152"}'
    assert (new / "benchmarks" / "youcook2.csv").exists() and (new / store.WORDS).exists()
    assert store.migrate_store(old, new)["shards_converted"] == 0, "a finished migration is a no-op"


def test_migrate_refuses_what_it_cannot_do(tmp_path):
    finished_store(tmp_path / "v2", [["a"]])
    with pytest.raises(MCNError, match="already store format 2"):
        store.migrate_store(tmp_path / "v2", tmp_path / "out")
    finished_store(tmp_path / "v1", [["a"]], format_version=1)
    with pytest.raises(MCNError, match="other than OLD"):
        store.migrate_store(tmp_path / "v1", tmp_path / "v1")
    with pytest.raises(MCNError, match="a store of its own"):
        store.migrate_store(tmp_path / "v1", tmp_path / "v2")


def test_migrate_into_an_object_store(tmp_path, s3_bucket):
    records = finished_store(tmp_path / "old", [["a", "b"]], format_version=1)
    store.migrate_store(tmp_path / "old", f"{s3_bucket}/migrated")
    reader = store.StoreReader(f"{s3_bucket}/migrated")
    assert reader.format_version == 2
    for video_id, expected in records.items():
        assert_same_record(reader.read(video_id), expected)


# ---- other tools, no mcn ----------------------------------------------------------------------------------

OTHER_TOOLS = textwrap.dedent(
    """
    import sys
    import duckdb, numpy as np, pandas as pd, pyarrow.parquet as pq

    store, expected = sys.argv[1], np.load(sys.argv[2])
    table = pq.read_table(f"{store}/shards/shard-000000.parquet")
    row = table.to_pylist()[2]
    assert row["video_id"] == "c"
    np.testing.assert_array_equal(np.array(row["feat_2d"], np.float16), expected["feat_2d"])
    np.testing.assert_array_equal(np.array(row["logmel"], np.float16).T, expected["logmel"])
    assert [c["text"] for c in row["captions"]] == ["cut the onion", "stir it"]

    frame = pd.read_parquet(f"{store}/shards/shard-000000.parquet")
    np.testing.assert_array_equal(np.stack(frame.loc[2, "feat_3d"]), expected["feat_3d"])

    rows = duckdb.sql(
        f"SELECT video_id, len(feat_2d) AS frames, feat_2d[1] AS first, captions[1].text AS text "
        f"FROM '{store}/shards/*.parquet' ORDER BY video_id"
    ).fetchall()
    assert [(r[0], r[1], r[3]) for r in rows] == [("a", 3, "cut the onion"), ("b", 4, "cut the onion"), ("c", 5, "cut the onion")]
    np.testing.assert_array_equal(np.array(rows[2][2], np.float32), expected["feat_2d"][0].astype(np.float32))
    assert not [name for name in sys.modules if name == "mcn" or name.startswith("mcn.")]
    print("read without mcn")
    """
)


def expected_arrays(records, video_id, path):
    record = records[video_id]
    np.savez(path, feat_2d=record.feat_2d, feat_3d=record.feat_3d, logmel=record.logmel)
    return path


def test_pyarrow_pandas_and_duckdb_read_format_2_without_mcn(tmp_path):
    records = finished_store(tmp_path / "store", [["a", "b", "c"]])
    expected = expected_arrays(records, "c", tmp_path / "c.npz")
    result = subprocess.run(
        [sys.executable, "-c", OTHER_TOOLS, str(tmp_path / "store"), str(expected)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0 and "read without mcn" in result.stdout, result.stderr[-3000:]


RAY_DATA = textwrap.dedent(
    """
    import sys
    import numpy as np, ray

    store, expected = sys.argv[1], np.load(sys.argv[2])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=sys.argv[3])
    rows = ray.data.read_parquet(f"{store}/shards").filter(lambda row: row["video_id"] == "c").take_all()
    assert len(rows) == 1
    np.testing.assert_array_equal(np.stack(rows[0]["feat_2d"]).astype(np.float16), expected["feat_2d"])
    assert not [name for name in sys.modules if name == "mcn" or name.startswith("mcn.")]
    print("read without mcn")
    """
)


@pytest.mark.slow
def test_ray_data_reads_format_2_without_mcn(tmp_path):
    records = finished_store(tmp_path / "store", [["a", "b", "c"]])
    expected = expected_arrays(records, "c", tmp_path / "c.npz")
    ray_tmp = f"/tmp/mcnray{os.getpid()}"  # short: Ray's socket paths must stay < 108 bytes
    result = subprocess.run(
        [sys.executable, "-c", RAY_DATA, str(tmp_path / "store"), str(expected), ray_tmp],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0 and "read without mcn" in result.stdout, result.stderr[-3000:]
