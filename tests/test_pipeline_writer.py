"""mcn.pipeline.writer: resume state, atomic shards, failure parts folded at the end, words and the manifest;
a resume that reads before it changes anything and moves damage aside; a folder that is the store's alone."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from writer_store import IDENTITY, as_format_1, failure, record, word_vectors, write_store

from mcn import storage, store
from mcn.configs import apply_overrides
from mcn.errors import MCNError
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.config import ShardConfig
from mcn.pipeline.writer import (
    EXTRACTION,
    FAILURE_PARTS,
    MARKER,
    QUARANTINE,
    SUMMARY,
    StoreWriter,
    extraction_identity,
    record_nbytes,
    scan_store,
)


def open_writer(root, identity=IDENTITY, **limits) -> StoreWriter:
    writer = StoreWriter(root, identity, ShardConfig(**limits))
    writer.open()
    return writer


def test_a_finished_store_holds_every_video_once_with_its_words(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b", "c"], failed={"x": "corrupt"})
    reader = store.StoreReader(root)
    assert [s["video_ids"] for s in reader.manifest["shards"]] == [["a", "b"], ["c"]]
    assert reader.manifest["counts"] == {**reader.manifest["counts"], "videos": 3, "failures": 1, "words": 5}
    assert [f["video_id"] for f in reader.failures()] == ["x"]
    assert reader.words.words == ["cut", "the", "onion", "stir", "pot"]
    np.testing.assert_array_equal(reader.words.vectors_UW, word_vectors().vectors)
    np.testing.assert_array_equal(reader.read("b").feat_2d, record("b").feat_2d)
    summary = json.loads((root / SUMMARY).read_text())
    assert summary == {
        "extracted": 3,
        "store": {"videos": 3, "failures": 1, "failures_by_reason": {"corrupt": 1}},
    }, "the summary's store totals are what the manifest and the failures table hold"
    assert not list((root / FAILURE_PARTS).glob("*.parquet")), (
        "failure parts are folded into failures.parquet"
    )


def test_shards_close_at_the_byte_bound_with_whole_videos(tmp_path):
    one = record_nbytes(record("a"))
    writer = open_writer(tmp_path, max_videos=100, max_bytes=int(2.5 * one))
    for video_id in "abcde":
        writer.add(record(video_id))
    writer.flush()
    writer.wait()
    writer.close()
    assert [store.shard_video_ids(p) for p in store.list_shards(tmp_path)] == [["a", "b"], ["c", "d"], ["e"]]


def test_resume_knows_what_is_done_and_numbers_new_shards_after_the_old(tmp_path):
    writer = open_writer(tmp_path, max_videos=1)
    writer.add(record("a"))
    writer.record_failures([failure("x")])
    writer.wait()
    writer.close()  # a crash: no finish, no manifest
    (tmp_path / store.SHARD_DIR / ".shard-000007.parquet.tmp-123").write_bytes(b"half")
    writer = open_writer(tmp_path, max_videos=1)
    assert writer.done_ids == {"a"} and set(writer.failures) == {"x"}
    assert not list((tmp_path / store.SHARD_DIR).glob(".*")), "stray temporary files are removed"
    writer.add(record("b"))
    writer.finish(None, {}, {})
    writer.close()
    assert [p.name for p in store.list_shards(tmp_path)] == ["shard-000000.parquet", "shard-000001.parquet"]


def test_the_latest_failure_wins_and_a_later_success_clears_it(tmp_path):
    writer = open_writer(tmp_path)
    writer.record_failures([failure("x", "corrupt"), failure("y", "corrupt")])
    writer.record_failures([failure("x", "timeout")])
    assert scan_store(tmp_path).failures["x"]["reason"] == "timeout"
    writer.add(record("y"))
    writer.finish(None, {}, {})
    writer.close()
    assert {f["video_id"]: f["reason"] for f in store.read_failures(tmp_path)} == {"x": "timeout"}


def test_another_extraction_identity_is_refused(tmp_path):
    open_writer(tmp_path).close()
    assert json.loads((tmp_path / EXTRACTION).read_text()) == IDENTITY
    with pytest.raises(MCNError, match="model_2d"):
        open_writer(tmp_path, identity={**IDENTITY, "model_2d": "resnet152"})


def test_a_second_writer_is_locked_out(tmp_path):
    first = open_writer(tmp_path)
    try:
        with pytest.raises(MCNError, match="another extraction job"):
            open_writer(tmp_path)
    finally:
        first.close()


def test_a_file_as_the_store_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MCNError, match="is a file"):
        open_writer(tmp_path / "file")


def test_identity_ignores_how_decoding_runs_but_not_what_it_decodes(tmp_path):
    base = pipeline_config.tiny_cpu()
    identity = extraction_identity(base)
    assert identity == extraction_identity(apply_overrides(base, {"extract.decode.timeout_s": "1"}))
    assert (
        identity["decode"]
        != extraction_identity(apply_overrides(base, {"extract.decode.rate_2d": "2"}))["decode"]
    )
    assert identity["weights_2d"] == "random-init" and identity["word_vectors"] is None
    (tmp_path / "w.pth").write_bytes(b"weights")
    with_weights = apply_overrides(base, {"extract.models.weights_3d": str(tmp_path / "w.pth")})
    assert len(extraction_identity(with_weights)["weights_3d"]) == 64


def test_shards_describe_themselves(tmp_path):
    root = write_store(tmp_path / "store", ["a"])
    metadata = pq.read_schema(store.list_shards(root)[0]).metadata
    assert json.loads(metadata[b"video_ids"]) == ["a"]
    assert json.loads(metadata[b"extraction"]) == IDENTITY
    assert metadata[b"mcn_store_format"] == str(store.STORE_FORMAT_VERSION).encode()


def test_a_new_store_is_format_2_and_an_old_one_keeps_format_1(tmp_path):
    new = write_store(tmp_path / "new", ["a", "b", "c"])
    assert [store.shard_format(p) for p in store.list_shards(new)] == [2, 2]
    assert store.StoreReader(new).format_version == 2
    old = write_store(tmp_path / "old", ["a", "b"])
    as_format_1(old)
    writer = StoreWriter(old, IDENTITY, ShardConfig(max_videos=2))
    writer.open()
    assert writer.done_ids == {"a", "b"}
    writer.add(record("c"))
    manifest = writer.finish(word_vectors(), {}, {})
    writer.close()
    assert [store.shard_format(p) for p in store.list_shards(old)] == [1, 1], "one format per store"
    assert manifest["format_version"] == store.StoreReader(old).format_version == 1
    reader = store.StoreReader(old)
    assert reader.read("c").caption_text == record("c").caption_text
    assert manifest["counts"]["words"] == 5 and manifest["counts"]["videos"] == 3


def cut_in_half(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def resume(root, **limits) -> StoreWriter:
    """Open a store as a rerun of the job would, finish it with nothing new, and close it."""
    writer = open_writer(root, **limits)
    writer.finish(word_vectors(), {}, {"extracted": 0})
    writer.close()
    return writer


def test_a_torn_shard_is_quarantined_its_videos_requeued_and_the_rest_kept(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b", "c"], failed={"x": "corrupt"})
    torn = store.list_shards(root)[0]  # holds a and b
    cut_in_half(torn)
    torn_bytes = torn.read_bytes()
    writer = open_writer(root)
    assert writer.done_ids == {"c"} and set(writer.failures) == {"x"}, "a and b are extracted again"
    assert not (root / store.MANIFEST).exists()
    moved = next((root / QUARANTINE).glob("*/shards/shard-000000.parquet"))
    assert moved.read_bytes() == torn_bytes, "damage is moved aside, never deleted"
    writer.add(record("a"))
    writer.add(record("b"))
    writer.finish(word_vectors(), {}, {})
    writer.close()
    reader = store.StoreReader(root)
    assert sorted(reader.video_ids) == ["a", "b", "c"]
    assert [p.name for p in store.list_shards(root)] == ["shard-000001.parquet", "shard-000002.parquet"]
    quarantine = json.loads((root / SUMMARY).read_text())["quarantine"]
    assert quarantine["folder"] == str(moved.parents[1])
    assert quarantine["files"] == {
        "shards/shard-000000.parquet": quarantine["files"]["shards/shard-000000.parquet"]
    }
    assert quarantine["videos_extracted_again"] == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"PAR1" + os.urandom(300) + b"PAR1"),
        lambda p: (p.unlink(), p.mkdir()),
        lambda p: (p.unlink(), p.symlink_to(p.parent.parent / "elsewhere.parquet")),
    ],
    ids=["empty", "garbage", "a-folder", "a-link"],
)
def test_any_unreadable_shard_is_quarantined_and_healthy_ones_stay(tmp_path, damage):
    root = write_store(tmp_path / "store", ["a", "b", "c"])
    shutil.copy(store.list_shards(root)[0], root / "elsewhere.parquet")
    damage(store.list_shards(root)[1])  # holds c
    writer = open_writer(root)
    writer.close()
    assert writer.done_ids == {"a", "b"}
    assert (root / "elsewhere.parquet").is_file(), "a link is moved, not followed"
    assert [p.name for p in store.list_shards(root)] == ["shard-000000.parquet"]


def test_a_torn_failures_table_is_quarantined_and_its_videos_requeued(tmp_path):
    root = write_store(tmp_path / "store", ["a"], failed={"x": "corrupt", "y": "empty"})
    cut_in_half(root / store.FAILURES)
    writer = open_writer(root)
    assert writer.done_ids == {"a"} and writer.failures == {}, "x and y are tried again"
    writer.record_failures([failure("x", "corrupt")])
    writer.finish(word_vectors(), {}, {})
    writer.close()
    assert [f["video_id"] for f in store.read_failures(root)] == ["x"]
    assert next((root / QUARANTINE).glob(f"*/{store.FAILURES}")).exists()
    assert store.StoreReader(root).manifest["counts"]["failures"] == 1


def test_a_torn_failure_part_and_manifest_are_quarantined(tmp_path):
    writer = open_writer(tmp_path)
    writer.add(record("a"))
    writer.record_failures([failure("x")])
    writer.finish(word_vectors(), {}, {})
    writer.close()
    writer = open_writer(tmp_path)  # an interrupted rerun: a failure part, no manifest
    writer.record_failures([failure("y")])
    writer.close()
    part = next((tmp_path / FAILURE_PARTS).glob("part-*.parquet"))
    cut_in_half(part)
    (tmp_path / store.MANIFEST).write_text('{"shards": [')
    writer = resume(tmp_path)
    assert set(writer.failures) == {"x"} and writer.done_ids == {"a"}
    moved = {p.name for p in (tmp_path / QUARANTINE).rglob("*") if p.is_file()}
    assert {part.name, store.MANIFEST, "why.json"} <= moved
    assert store.StoreReader(tmp_path).manifest["counts"] == {
        **store.StoreReader(tmp_path).manifest["counts"],
        "videos": 1,
        "failures": 1,
    }


def test_nothing_changes_when_the_open_is_refused(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b", "c"])
    cut_in_half(store.list_shards(root)[0])
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(MCNError, match="different config"):
        open_writer(root, identity={**IDENTITY, "model_2d": "other"})
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before, "read and checked, nothing changed"
    open_writer(root).close()  # the refused open released the lock


def test_open_without_commit_reads_only(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b", "c"])
    cut_in_half(store.list_shards(root)[1])
    writer = open_writer_uncommitted(root)
    try:
        assert writer.done_ids == {"a", "b"} and (root / store.MANIFEST).exists()
        assert len(store.list_shards(root)) == 2 and not any((root / QUARANTINE).iterdir())
        writer.commit()
        assert not (root / store.MANIFEST).exists() and len(store.list_shards(root)) == 1
    finally:
        writer.close()


def open_writer_uncommitted(root) -> StoreWriter:
    writer = StoreWriter(root, IDENTITY, ShardConfig())
    writer.open(commit=False)
    return writer


def test_a_shard_repeating_another_shards_video_is_quarantined(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b"], max_videos=1)
    shutil.copy(store.list_shards(root)[0], root / store.SHARD_DIR / "shard-000005.parquet")
    writer = resume(root)
    assert writer.done_ids == {"a", "b"}
    assert [p.name for p in store.list_shards(root)] == ["shard-000000.parquet", "shard-000001.parquet"]
    assert next((root / QUARANTINE).glob("*/shards/shard-000005.parquet")).exists()
    assert store.StoreReader(root).manifest["counts"]["videos"] == 2


def test_a_damaged_identity_is_recovered_from_the_shards(tmp_path):
    root = write_store(tmp_path / "store", ["a"])
    (root / EXTRACTION).write_text("{")
    with pytest.raises(MCNError, match="different config"):
        open_writer(root, identity={**IDENTITY, "model_2d": "other"})
    resume(root)
    assert json.loads((root / EXTRACTION).read_text()) == IDENTITY


@pytest.mark.parametrize("name", [".lock", "shards", "failures", "quarantine"])
def test_links_that_would_write_outside_are_refused(tmp_path, name):
    root = write_store(tmp_path / "store", ["a"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".shard-000001.parquet.tmp-1").write_text("user data")
    (outside / ".part-1.parquet.tmp").write_text("user data")
    target = outside / "precious.txt" if name == ".lock" else outside
    (outside / "precious.txt").write_text("user data")
    path = root / name
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    path.symlink_to(target)
    with pytest.raises(MCNError, match="symbolic link"):
        open_writer(root)
    assert sorted(p.name for p in outside.iterdir()) == [
        ".part-1.parquet.tmp",
        ".shard-000001.parquet.tmp-1",
        "precious.txt",
    ]
    assert all(p.read_text() == "user data" for p in outside.iterdir())
    assert (root / store.MANIFEST).exists(), "a refused open changes nothing"


def test_links_to_the_stores_own_files_are_moved_aside_not_written_through(tmp_path):
    root = write_store(tmp_path / "store", ["a"])
    outside = tmp_path / "user.json"
    outside.write_text("user data")
    for name in (SUMMARY, "config.json", store.WORDS):
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to(outside)
    resume(root)
    assert outside.read_text() == "user data"
    assert all((root / name).is_file() and not (root / name).is_symlink() for name in (SUMMARY, store.WORDS))


def test_an_ordinary_folder_is_refused_untouched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    files = {".notes.tmp": "hidden", ".x.tmp-1": "hidden", "config.json": "{}", "summary.json": "mine"}
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(MCNError, match="neither empty nor an mcn store"):
        open_writer(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_an_out_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MCNError, match="cannot write to the store folder"):
        open_writer(tmp_path / "file" / "store")


def test_an_empty_or_new_folder_becomes_a_store_marker_first(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new" / "store"):
        writer = open_writer_uncommitted(root)
        writer.close()
        assert sorted(p.name for p in root.iterdir()) == [".lock", MARKER, "failures", QUARANTINE, "shards"]
        open_writer(root).close()  # a store that holds only its marker reopens


def test_a_store_made_before_the_marker_is_still_a_store(tmp_path):
    root = write_store(tmp_path / "store", ["a"])
    (root / MARKER).unlink()
    (root / ".config.json.x1.tmp").write_text("{")  # a stray of the store's own
    (root / ".notes.tmp").write_text("kept")  # not a name the store writes
    writer = resume(root)
    assert writer.done_ids == {"a"} and (root / MARKER).exists()
    assert not (root / ".config.json.x1.tmp").exists() and (root / ".notes.tmp").read_text() == "kept"


def test_the_source_of_each_video_is_recorded_in_its_extra(tmp_path):
    writer = open_writer(tmp_path)
    writer.sources = {"a": {"source_size": 123, "source_mtime_ns": 456}}
    writer.add(record("a"))
    writer.add(record("b"))
    writer.finish(None, {}, {})
    writer.close()
    reader = store.StoreReader(tmp_path)
    assert reader.read("a", ["extra"]).extra == {"source_size": 123, "source_mtime_ns": 456}
    assert reader.read("b", ["extra"]).extra == {}
    writer = open_writer_uncommitted(tmp_path)
    writer.close()
    assert writer.source_records()["a"] == ("/videos/a.mp4", {"source_size": 123, "source_mtime_ns": 456})


def test_a_store_in_a_bucket_is_written_locked_and_repaired_like_a_folder(s3_bucket):
    root = write_store(f"{s3_bucket}/store", ["a", "b", "c"], failed={"x": "corrupt"})
    reader = store.StoreReader(root)
    assert [s["video_ids"] for s in reader.manifest["shards"]] == [["a", "b"], ["c"]]
    assert [f["video_id"] for f in reader.failures()] == ["x"]
    np.testing.assert_array_equal(reader.read("b").feat_2d, record("b").feat_2d)
    left = sorted(storage.relative(p, root) for p in storage.list_files(root, recursive=True))
    assert left == sorted(
        [MARKER, EXTRACTION, SUMMARY, store.MANIFEST, store.WORDS, store.FAILURES]
        + ["shards/shard-000000.parquet", "shards/shard-000001.parquet"]
    ), "no lock and no failure parts are left once the job is done"

    first = open_writer(root)
    with pytest.raises(MCNError, match="another extraction job"):
        open_writer(root)
    first.close()

    torn = store.list_shards(root)[0]  # holds a and b
    torn_bytes = storage.read_bytes(torn)
    storage.write_bytes(torn, torn_bytes[: len(torn_bytes) // 2])
    writer = open_writer(root)
    try:
        assert writer.done_ids == {"c"} and set(writer.failures) == {"x"}, "a and b are extracted again"
        assert not storage.exists(storage.join(root, store.MANIFEST))
        moved = storage.list_files(storage.join(root, QUARANTINE), "shard-000000.parquet", recursive=True)
        assert len(moved) == 1 and storage.read_bytes(moved[0]) == torn_bytes[: len(torn_bytes) // 2]
        assert not storage.exists(torn), "damage is moved aside, never deleted"
        writer.add(record("a"))
        writer.add(record("b"))
        writer.finish(word_vectors(), {}, {})
    finally:
        writer.close()
    reader = store.StoreReader(root)
    assert sorted(reader.video_ids) == ["a", "b", "c"]
    assert [storage.name(p) for p in store.list_shards(root)] == [
        "shard-000001.parquet",
        "shard-000002.parquet",
    ]
    assert store.read_shard_video(store.list_shards(root)[1], 0).video_id == "a"
