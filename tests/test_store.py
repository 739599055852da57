"""The store format: atomic shards, one row group per video, projections, word table, manifest reader."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mcn import store
from mcn.errors import MCNError


def make_record(
    video_id: str, seconds: int, rng: np.random.Generator, with_audio: bool = True
) -> store.VideoRecord:
    return store.VideoRecord(
        video_id=video_id,
        source_path=f"/videos/{video_id}.mp4",
        duration=float(seconds),
        fps=29.97,
        width=640,
        height=360,
        has_audio=with_audio,
        caption_source="vtt",
        extra={"codec": "h264"},
        feat_2d=rng.standard_normal((seconds, 2048)).astype(np.float16),
        feat_3d=rng.standard_normal((int(seconds * 1.5), 2048)).astype(np.float16),
        logmel=rng.standard_normal((40, seconds * 100)).astype(np.float16) if with_audio else None,
        caption_start=np.array([0.0, 2.5], np.float32),
        caption_end=np.array([2.5, 4.0], np.float32),
        caption_text=["cut the onion", "stir it"],
        caption_token_ids=[np.array([3, 1, 7], np.int32), np.array([], np.int32)],
    )


def finished_store(tmp_path, records_per_shard):
    rng = np.random.default_rng(0)
    shards, records = [], {}
    for index, ids in enumerate(records_per_shard):
        batch = [make_record(v, 3 + i, rng, with_audio=i % 2 == 0) for i, v in enumerate(ids)]
        records.update({r.video_id: r for r in batch})
        store.write_shard(tmp_path / store.SHARD_DIR / store.shard_name(index), batch)
        shards.append({"name": store.shard_name(index), "video_ids": list(ids)})
    store.write_words(tmp_path, np.array([7, 1, 3]), ["onion", "the", "cut"], np.eye(3, 4, dtype=np.float32))
    store.write_manifest(tmp_path, {"shards": shards})
    return records


def test_round_trip_and_row_group_per_video(tmp_path):
    records = finished_store(tmp_path, [["a", "b", "c"], ["d"]])
    reader = store.StoreReader(tmp_path)
    assert sorted(reader.video_ids) == ["a", "b", "c", "d"]
    assert pq.ParquetFile(tmp_path / "shards" / store.shard_name(0)).num_row_groups == 3
    for video_id, expected in records.items():
        got = reader.read(video_id)
        np.testing.assert_array_equal(got.feat_2d, expected.feat_2d)
        np.testing.assert_array_equal(got.feat_3d, expected.feat_3d)
        assert got.feat_2d.dtype == np.float16
        if expected.logmel is None:
            assert got.logmel.shape == (40, 0)
        else:
            np.testing.assert_array_equal(got.logmel, expected.logmel)
        assert got.caption_text == expected.caption_text
        assert [ids.tolist() for ids in got.caption_token_ids] == [[3, 1, 7], []]
        assert got.extra == {"codec": "h264"} and got.fps == pytest.approx(29.97)


def test_projection_reads_only_asked_columns(tmp_path):
    finished_store(tmp_path, [["a", "b"]])
    got = store.StoreReader(tmp_path).read("b", fields=["captions", "duration"])
    assert got.feat_2d is None and got.logmel is None
    assert got.duration == 4.0 and got.caption_text == ["cut the onion", "stir it"]
    with pytest.raises(ValueError, match="unknown store field"):
        store.StoreReader(tmp_path).read("b", fields=["pixels"])


def test_words_lookup(tmp_path):
    finished_store(tmp_path, [["a"]])
    words = store.StoreReader(tmp_path).words
    assert words.token_ids.tolist() == [1, 3, 7] and words.words == ["the", "cut", "onion"]
    vectors = words.lookup(np.array([[7, 3]]))
    assert vectors.shape == (1, 2, 4)
    np.testing.assert_array_equal(vectors[0, 0], np.eye(3, 4)[0])
    with pytest.raises(KeyError):
        words.lookup(np.array([2]))


def test_unfinished_store_and_bad_shapes_are_clear_errors(tmp_path):
    with pytest.raises(MCNError, match="not a finished store"):
        store.StoreReader(tmp_path)
    bad = make_record("x", 3, np.random.default_rng(0))
    bad.feat_2d = np.zeros((3, 512), np.float16)
    with pytest.raises(ValueError, match="feat_2d has shape"):
        store.write_shard(tmp_path / "shards" / store.shard_name(0), [bad])
    assert store.list_shards(tmp_path) == [], "a failed write must leave no shard behind"
    assert not list((tmp_path / "shards").iterdir()), "a failed write must leave no temporary file behind"


def test_manifest_records_format_and_features(tmp_path):
    finished_store(tmp_path, [["a"]])
    manifest = json.loads((tmp_path / store.MANIFEST).read_text())
    assert manifest["format_version"] == store.STORE_FORMAT_VERSION
    assert manifest["features"]["feat_3d"]["rate_hz"] == 1.5
