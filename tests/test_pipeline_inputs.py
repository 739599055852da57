"""Pipeline pieces that need no Ray: inputs and id validation, config checks, the store writer, Whisper assembly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mcn import store
from mcn.errors import MCNError
from mcn.extract import asr
from mcn.pipeline import inputs
from mcn.pipeline.config import AsrConfig, ShardConfig, StageConfig
from mcn.pipeline.writer import StoreWriter

IDENTITY = {"model_2d": "resnet152-tiny", "weights_2d": "random-init", "word_vectors": "abc"}


def record(video_id: str, seconds: int = 2) -> store.VideoRecord:
    return store.VideoRecord(
        video_id=video_id,
        duration=float(seconds),
        feat_2d=np.ones((seconds, 2048), np.float16),
        feat_3d=np.ones((3, 2048), np.float16),
        logmel=np.zeros((40, 100 * seconds), np.float16),
        caption_start=np.array([0.0], np.float32),
        caption_end=np.array([1.0], np.float32),
        caption_text=["cut it"],
        caption_token_ids=[np.array([1, 2], np.int32)],
    )


@pytest.mark.parametrize("bad", ["", "../evil", "a/b", "a\\b", "x\x00y", "tab\there", "..", " padded"])
def test_hostile_ids_are_rejected(bad):
    assert inputs.video_id_problem(bad) is not None


@pytest.mark.parametrize("good", ["abc", "YouTube-id_09", "v.1", "日本語"])
def test_ordinary_ids_pass(good):
    assert inputs.video_id_problem(good) is None


def test_folder_pairs_videos_with_sidecars(tmp_path):
    for name in ("b.mp4", "b.srt", "a.webm", "a.vtt", "a.json", "c.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items, problems = inputs.read_inputs(tmp_path)
    assert problems == []
    assert [(i.video_id, i.caption_path and i.caption_path.rsplit(".", 1)[1]) for i in items] == [
        ("a", "vtt"),
        ("b", "srt"),
        ("c", None),
    ]


def test_manifest_rows_and_per_row_id_errors(tmp_path):
    (tmp_path / "m.csv").write_text(
        "video_path,caption_path,video_id\nv/a.mp4,v/a.vtt,ok\nv/b.mp4,,../evil\nv/c.mp4,,a/b\n/abs/d.mp4,,\n"
    )
    items, problems = inputs.read_inputs(tmp_path / "m.csv")
    assert [(i.video_id, i.video_path, i.caption_path) for i in items] == [
        ("ok", str(tmp_path / "v/a.mp4"), str(tmp_path / "v/a.vtt")),
        ("d", "/abs/d.mp4", None),
    ]
    assert [(p.video_id, p.reason) for p in problems] == [
        ("../evil", "bad_video_id"),
        ("a/b", "bad_video_id"),
    ]
    table = pa.table({"video_path": ["x.mp4", "y.mp4"], "video_id": ["x", "y\x00"]})
    pq.write_table(table, tmp_path / "m.parquet")
    items, problems = inputs.read_inputs(tmp_path / "m.parquet")
    assert [i.video_id for i in items] == ["x"] and "control characters" in problems[0].detail


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,caption\na.mp4,\n", "no 'video_path' column"),
        ("video_path,video_id\na.mp4,x\nb.mp4,x\n", "appears twice"),
        (b"PAR1\x00\x01garbage", "unreadable manifest"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / ("m.parquet" if isinstance(content, bytes) else "m.csv")
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(MCNError, match=message) as error:
        inputs.read_inputs(path)
    assert "\n" not in str(error.value)


def test_missing_input_and_wrong_suffix(tmp_path):
    with pytest.raises(MCNError, match="does not exist"):
        inputs.read_inputs(tmp_path / "nope")
    (tmp_path / "m.txt").write_text("video_path\n")
    with pytest.raises(MCNError, match=".csv or .parquet"):
        inputs.read_inputs(tmp_path / "m.txt")


def test_config_validation_says_how_to_fix():
    with pytest.raises(ValueError, match="decode_tasks"):
        StageConfig(decode_tasks=0)
    with pytest.raises(ValueError, match="max_videos"):
        ShardConfig(max_videos=0)
    with pytest.raises(ValueError, match="model_path"):
        AsrConfig(enabled=True, backend="transformers")


def test_writer_shards_failures_and_resume_state(tmp_path):
    root = tmp_path / "store"
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=2, max_bytes=1 << 30))
    writer.open()
    for name in ("a", "b", "c"):
        writer.add(record(name))
    writer.record_failures(
        [{"video_id": "bad", "source_path": "/x", "stage": "decode", "reason": "corrupt", "detail": "d"}]
    )
    writer.wait()
    assert [store.shard_video_ids(p) for p in store.list_shards(root)] == [["a", "b"]]
    with pytest.raises(MCNError, match="another extraction job"):
        StoreWriter(root, IDENTITY, ShardConfig()).open()
    writer.close()  # "c" was only buffered: a crash here loses it, and a rerun redoes it

    (root / store.SHARD_DIR / ".shard-000001.parquet.tmp-999").write_bytes(b"half")
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=2))
    writer.open()
    assert writer.done_ids == {"a", "b"} and set(writer.failures) == {"bad"}
    assert not list((root / store.SHARD_DIR).glob(".*tmp*"))
    writer.add(record("c"))
    writer.add(record("bad"))  # a retried failure that now succeeds leaves the failures table
    manifest = writer.finish(None, {}, {"ok": True})
    writer.close()
    assert manifest["counts"]["videos"] == 4 and manifest["counts"]["failures"] == 0
    reader = store.StoreReader(root)
    assert sorted(reader.video_ids) == ["a", "b", "bad", "c"] and reader.failures() == []
    assert json.loads((root / "summary.json").read_text()) == {"ok": True}


def test_writer_refuses_a_different_extraction(tmp_path):
    writer = StoreWriter(tmp_path, IDENTITY, ShardConfig())
    writer.open()
    writer.close()
    with pytest.raises(MCNError, match="weights_2d differ"):
        StoreWriter(tmp_path, {**IDENTITY, "weights_2d": "f00"}, ShardConfig()).open()


def test_whisper_base_assembles_from_the_two_packages(tmp_path):
    folder = asr.assemble_whisper_base(tmp_path / "whisper")
    parts = [asr._package_data(name) for name in asr.WHISPER_PACKAGES]
    expected = (parts[0] / "model.bin.part1").read_bytes()[:64]
    assert (folder / "model.bin").read_bytes()[:64] == expected
    size = (parts[0] / "model.bin.part1").stat().st_size + (parts[1] / "model.bin.part2").stat().st_size
    assert (folder / "model.bin").stat().st_size == size
    assert all((folder / name).is_file() for name in asr.WHISPER_FILES)
    assert asr.assemble_whisper_base(folder) == folder  # complete: nothing rebuilt
