"""Finished stores in both formats for the store tests; format 1 comes from a frozen copy of its first writer."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mcn import storage, store

# ---- a format-1 writer, frozen as the format was first written: stores made before format 2 must stay readable


FORMAT1_SCHEMA = pa.schema(
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
        *[(name, pa.binary()) for name in ("feat_2d", "feat_3d", "logmel")],
        *[(f"{name}_shape", pa.list_(pa.int32())) for name in ("feat_2d", "feat_3d", "logmel")],
        ("caption_start", pa.list_(pa.float32())),
        ("caption_end", pa.list_(pa.float32())),
        ("caption_text", pa.list_(pa.string())),
        ("caption_token_ids", pa.list_(pa.list_(pa.int32()))),
    ]
)
FORMAT1_EMPTY = {"feat_2d": (0, 2048), "feat_3d": (0, 2048), "logmel": (40, 0)}


def write_format1_shard(path, records):
    row_schema = FORMAT1_SCHEMA.with_metadata(
        {"mcn_store_format": "1", "video_ids": json.dumps([r.video_id for r in records])}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, row_schema, compression="zstd", compression_level=1) as writer:
        for r in records:
            row = {
                "video_id": r.video_id,
                "source_path": r.source_path,
                "duration": float(r.duration),
                "fps": float(r.fps),
                "width": int(r.width),
                "height": int(r.height),
                "has_audio": bool(r.has_audio),
                "caption_source": r.caption_source,
                "extra": json.dumps(r.extra, sort_keys=True),
                "caption_start": np.asarray(r.caption_start, np.float32).tolist(),
                "caption_end": np.asarray(r.caption_end, np.float32).tolist(),
                "caption_text": list(r.caption_text),
                "caption_token_ids": [np.asarray(ids, np.int32).tolist() for ids in r.caption_token_ids],
            }
            for name, empty in FORMAT1_EMPTY.items():
                array = getattr(r, name)
                array = np.zeros(empty, np.float16) if array is None else np.ascontiguousarray(array, "<f2")
                row[name], row[f"{name}_shape"] = array.tobytes(), list(array.shape)
            writer.write_table(pa.Table.from_pylist([row], schema=row_schema))


# ---- stores ------------------------------------------------------------------------------------------------


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


def finished_store(root, records_per_shard, format_version=2):
    """A finished store; format 1 comes from the frozen writer above. Returns the records by id."""
    rng = np.random.default_rng(0)
    shards, records = [], {}
    for index, ids in enumerate(records_per_shard):
        batch = [make_record(v, 3 + i, rng, with_audio=i % 2 == 0) for i, v in enumerate(ids)]
        records.update({r.video_id: r for r in batch})
        path = storage.join(root, store.SHARD_DIR, store.shard_name(index))
        if format_version == 1:
            write_format1_shard(path, batch)
        else:
            store.write_shard(path, batch, {"video_ids": list(ids)}, format_version=format_version)
        shards.append({"name": store.shard_name(index), "video_ids": list(ids)})
    store.write_words(root, np.array([7, 1, 3]), ["onion", "the", "cut"], np.eye(3, 4, dtype=np.float32))
    store.write_manifest(root, {"format_version": format_version, "shards": shards})
    return records


def assert_same_record(got, expected):
    np.testing.assert_array_equal(got.feat_2d, expected.feat_2d)
    np.testing.assert_array_equal(got.feat_3d, expected.feat_3d)
    assert got.feat_2d.dtype == got.feat_3d.dtype == got.logmel.dtype == np.float16
    if expected.logmel is None:
        assert got.logmel.shape == (40, 0)
    else:
        np.testing.assert_array_equal(got.logmel, expected.logmel)
    assert got.caption_text == expected.caption_text
    np.testing.assert_array_equal(got.caption_start, expected.caption_start)
    np.testing.assert_array_equal(got.caption_end, expected.caption_end)
    assert [ids.tolist() for ids in got.caption_token_ids] == [
        np.asarray(ids).tolist() for ids in expected.caption_token_ids
    ]
    assert all(ids.dtype == np.int32 for ids in got.caption_token_ids)
    assert got.extra == expected.extra and got.fps == pytest.approx(expected.fps)
    assert (got.video_id, got.duration, got.has_audio) == (
        expected.video_id,
        expected.duration,
        expected.has_audio,
    )
