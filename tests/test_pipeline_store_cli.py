"""mcn.pipeline.store_cli: `mcn store info|verify|repair|export` on stores written by the job's own writer,
sound, unfinished and damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from media import make_video
from writer_store import IDENTITY, as_format_1, failure, record, word_vectors, write_store

from mcn import cli, storage, store, store_rows
from mcn.errors import MCNError
from mcn.pipeline.config import ShardConfig
from mcn.pipeline.store_cli import (
    copy_finished_store,
    export_video,
    repair_store,
    store_info,
    verify_store,
)
from mcn.pipeline.writer import QUARANTINE, SUMMARY, StoreWriter


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return write_store(
        tmp_path_factory.mktemp("s") / "store", ["cook", "plain", "silent"], {"corrupt": "corrupt"}
    )


def test_info_counts_videos_hours_and_failures(finished, capsys):
    info = store_info(finished)
    assert info["finished"] and info["videos"] == 3 and info["shards"] == 2 and info["failures"] == 1
    assert info["failures_by_reason"] == {"corrupt": 1} and info["hours"] == round(9 / 3600, 4)
    assert cli.main(["store", "info", str(finished)]) == 0
    assert "videos 3" in capsys.readouterr().out
    assert cli.main(["store", "info", str(finished), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 3


def test_export_writes_npz_and_the_reference_layout(finished, tmp_path):
    assert cli.main(["store", "export", str(finished), "cook", "--out", str(tmp_path / "cook.npz")]) == 0
    exported = np.load(tmp_path / "cook.npz")
    record = store.StoreReader(finished).read("cook")
    np.testing.assert_array_equal(exported["feat_3d"], record.feat_3d)
    assert list(exported["caption_text"]) == record.caption_text
    np.testing.assert_array_equal(exported["caption_token_offsets"], [0, 3, 6])
    paths = export_video(finished, "cook", tmp_path / "ref", layout="reference")
    assert [p.name for p in paths] == ["cook_2d.npz", "cook_3d.npz"]
    np.testing.assert_array_equal(np.load(paths[0])["features"], record.feat_2d)
    assert cli.main(["store", "export", str(finished), "../evil", "--out", str(tmp_path / "x.npz")]) == 2
    with pytest.raises(MCNError, match="path separator"):
        export_video(finished, "../../evil", tmp_path / "ref", layout="reference")
    assert cli.main(["store", "export", str(finished), "cook", "--out", str(tmp_path / "x.txt")]) == 2


def test_verify_passes_a_sound_store(finished):
    assert verify_store(finished) == []
    assert cli.main(["store", "verify", str(finished)]) == 0


def test_verify_finds_a_damaged_store(finished, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(finished, damaged)
    first = store.list_shards(damaged)[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    shutil.copy(store.list_shards(damaged)[1], damaged / store.SHARD_DIR / "shard-000009.parquet")
    problems = verify_store(damaged)
    assert any("shard-000000.parquet is not a readable shard" in p for p in problems)
    assert any("shard-000009.parquet repeats video 'silent'" in p for p in problems)
    assert not any("is in the manifest but missing" in p for p in problems), "damage is reported once"
    assert cli.main(["store", "verify", str(damaged)]) == 1


def test_verify_finds_duplicates_and_missing_words(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b"], max_videos=1)
    shutil.copy(store.list_shards(root)[0], store.list_shards(root)[1])  # "a" twice, "b" gone
    (root / store.WORDS).unlink()
    problems = verify_store(root)
    assert any("shard-000001.parquet repeats video 'a'" in p for p in problems)
    assert any("manifest counts 2 videos, the shards hold 1" in p for p in problems)
    assert any(store.WORDS in p for p in problems)


def run_mcn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcn", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        ("shard", "shards/shard-000000.parquet is not a readable shard"),
        ("failures", "failures.parquet is not a readable failures table"),
        ("manifest", "manifest.json is damaged"),
        ("words", "words.parquet is damaged"),
    ],
)
def test_verify_reports_torn_files_and_the_command_that_repairs_them(finished, tmp_path, damage, found):
    root = tmp_path / "store"
    shutil.copytree(finished, root)
    path = {
        "shard": store.list_shards(root)[0],
        "failures": root / store.FAILURES,
        "manifest": root / store.MANIFEST,
        "words": root / store.WORDS,
    }[damage]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = run_mcn("store", "verify", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "problem: " in result.stdout and found in result.stdout, result.stdout
    assert "repair: " in result.stdout and "mcn extract" in result.stdout
    info = run_mcn("store", "info", str(root), "--json")
    assert info.returncode == 0 and "Traceback" not in info.stderr, info.stderr


def test_damage_inside_an_intact_file_is_found_and_repair_moves_it_aside(finished, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(finished, root)
    shard = store.list_shards(root)[0]
    parquet = pq.ParquetFile(shard)
    column = parquet.metadata.row_group(0).column(parquet.schema_arrow.get_field_index("feat_2d"))
    data = bytearray(shard.read_bytes())
    start = column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    shard.write_bytes(bytes(data))
    assert store.shard_video_ids(shard) == ["cook", "plain"], "the footer and the id column are intact"
    problems = verify_store(root)
    assert any("shard-000000.parquet is damaged inside" in p for p in problems), problems
    result = run_mcn("store", "verify", str(root))
    assert f"mcn store repair {root}" in result.stdout, result.stdout
    folder, moved = repair_store(root)
    assert set(moved) == {shard} and (folder / "shards" / shard.name).exists()
    assert not (root / store.MANIFEST).exists(), "the repaired store is unfinished until the job reruns"
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=2))
    writer.open()
    assert writer.done_ids == {"silent"}, "the rerun extracts the moved videos again"
    for video_id in ("cook", "plain"):
        writer.add(record(video_id))
    writer.finish(word_vectors(), {}, {})
    writer.close()
    assert verify_store(root) == []
    assert repair_store(root) == (None, {})


def test_verify_reports_invalid_caption_times_in_a_shard(tmp_path):
    writer = StoreWriter(tmp_path, IDENTITY, ShardConfig())
    writer.open()
    bad = record("nan")
    bad.caption_start = np.array([0.0, np.nan], np.float32)
    reversed_ = record("reversed")
    reversed_.caption_start, reversed_.caption_end = (
        np.array([2.0, 3.0], np.float32),
        np.array([3.0, 1.0], np.float32),
    )
    for item in (bad, reversed_, record("good")):
        writer.add(item)
    writer.finish(word_vectors(), {}, {})
    writer.close()
    problems = verify_store(tmp_path)
    assert any("nan: caption 1 has a non-finite time" in p for p in problems), problems
    assert any("reversed: caption 1 ends before it starts" in p for p in problems), problems


def test_info_summary_and_failures_table_agree(tmp_path):
    root = tmp_path / "store"
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=1))
    writer.open()
    writer.add(record("a"))
    writer.add(record("b"))
    writer.record_failures([failure("x", "corrupt"), failure("y", "timeout"), failure("b", "corrupt")])
    writer.record_failures([failure("x", "empty")])
    writer.wait()
    writer.close()  # interrupted: failure parts, no manifest
    unfinished = store_info(root)
    assert not unfinished["finished"] and unfinished["videos"] == 2
    assert unfinished["failures_by_reason"] == {"empty": 1, "timeout": 1}, (
        "latest record, minus stored videos"
    )
    writer = StoreWriter(root, IDENTITY, ShardConfig(max_videos=1))
    writer.open()
    writer.finish(word_vectors(), {}, {"extracted": 0})
    writer.close()
    info = store_info(root)
    summary = json.loads((root / SUMMARY).read_text())["store"]
    table = store.read_failures(root)
    assert info["videos"] == summary["videos"] == 2
    assert info["failures"] == summary["failures"] == len(table) == 2
    assert info["failures_by_reason"] == summary["failures_by_reason"] == {"empty": 1, "timeout": 1}
    assert sorted(f["video_id"] for f in table) == ["x", "y"]


def test_info_lists_damage_and_quarantine(finished, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(finished, root)
    shard = store.list_shards(root)[1]
    shard.write_bytes(b"")
    info = store_info(root)
    assert info["videos"] == 2 and info["shards"] == 1
    assert list(info["damaged"]) == ["shards/shard-000001.parquet"]
    repair_store(root)
    assert store_info(root)["damaged"] == {} and len(store_info(root)["quarantine"]) == 1
    assert (root / QUARANTINE).is_dir()


def test_the_store_command_exits_zero_in_a_subprocess(finished):
    result = subprocess.run(
        [sys.executable, "-m", "mcn", "store", "verify", str(finished)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_damage_to_format_2_shards_is_found_and_repaired(finished, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(finished, root)
    assert store.StoreReader(root).format_version == 2
    torn, inside = store.list_shards(root)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    group = pq.ParquetFile(inside).metadata.row_group(0)
    logmel = next(
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == store_rows.FEATURE_LEAVES["logmel"]
    )
    end = logmel.data_page_offset + logmel.total_compressed_size  # the last values: NaN as float16
    data = bytearray(inside.read_bytes())
    data[end - 64 : end] = b"\xff" * 64
    inside.write_bytes(bytes(data))
    (root / store.SHARD_DIR / "shard-000002.parquet").symlink_to(inside)
    assert store.shard_video_ids(inside) == ["silent"], "the footer and the id column are intact"
    problems = verify_store(root)
    assert any("shard-000000.parquet is not a readable shard" in p for p in problems), problems
    assert any("shard-000001.parquet holds invalid values" in p for p in problems), problems
    assert any("silent: logmel has non-finite values" in p for p in problems), problems
    assert any("shard-000002.parquet is a symbolic link" in p for p in problems), problems
    folder, moved = repair_store(root)
    assert {p.name for p in moved} == {"shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet"}
    assert (folder / "shards" / "shard-000002.parquet").is_symlink(), "the link is moved, not followed"
    assert store.list_shards(root) == [] and not (root / store.MANIFEST).exists()


def test_migrate_makes_a_sound_format_2_store_of_the_jobs_store(finished, tmp_path, capsys):
    old = tmp_path / "format1"
    shutil.copytree(finished, old)
    as_format_1(old)
    assert verify_store(old) == [] and store.StoreReader(old).format_version == 1
    new = tmp_path / "format2"
    assert cli.main(["store", "migrate", str(old), str(new)]) == 0
    assert "2 shards converted" in capsys.readouterr().out
    assert verify_store(new) == [] and store.StoreReader(new).format_version == 2
    old_reader, new_reader = store.StoreReader(old), store.StoreReader(new)
    for video_id in old_reader.video_ids:
        before, migrated = old_reader.read(video_id), new_reader.read(video_id)
        np.testing.assert_array_equal(migrated.logmel, before.logmel)
        np.testing.assert_array_equal(migrated.feat_3d, before.feat_3d)
        assert migrated.caption_text == before.caption_text
    assert store_info(new)["failures"] == store_info(old)["failures"] == 1
    assert cli.main(["store", "migrate", str(new), str(tmp_path / "again")]) == 2, "already format 2"


def test_info_verify_and_export_read_a_store_in_a_bucket(finished, s3_bucket, tmp_path):
    url = f"{s3_bucket}/stores/one"
    copied = run_mcn("store", "copy", str(finished), url)
    assert copied.returncode == 0 and "files copied" in copied.stdout, copied.stderr
    again = run_mcn("store", "copy", str(finished), url)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    info = run_mcn("store", "info", url, "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout) == {**store_info(finished), "store": url}
    verified = run_mcn("store", "verify", url)
    assert verified.returncode == 0 and f"{url}: OK" in verified.stdout, verified.stdout + verified.stderr
    exported = run_mcn("store", "export", url, "cook", "--out", str(tmp_path / "cook.npz"))
    assert exported.returncode == 0, exported.stderr
    with np.load(tmp_path / "cook.npz") as arrays:
        assert np.array_equal(arrays["feat_2d"], store.StoreReader(finished).read("cook").feat_2d)

    shard = store.list_shards(url)[0]
    storage.write_bytes(shard, storage.read_bytes(shard)[: storage.size(shard) // 2])
    verified = run_mcn("store", "verify", url)
    assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr
    assert "problem: shards/shard-000000.parquet is not a readable shard" in verified.stdout, verified.stdout
    assert f"mcn store repair {url}" in verified.stdout, verified.stdout
    info = run_mcn("store", "info", url, "--json")
    assert info.returncode == 0, info.stderr
    assert list(json.loads(info.stdout)["damaged"]) == ["shards/shard-000000.parquet"]
    torn = storage.read_bytes(shard)
    repaired = run_mcn("store", "repair", url)
    assert repaired.returncode == 0 and "moved shard-000000.parquet" in repaired.stdout, repaired.stderr
    moved = storage.list_files(f"{url}/quarantine", "shard-000000.parquet", recursive=True)
    assert len(moved) == 1 and storage.read_bytes(moved[0]) == torn, "damage is moved aside, never deleted"
    assert not storage.exists(shard) and not storage.exists(f"{url}/{store.MANIFEST}")
    assert not storage.exists(f"{url}/.lock")
    assert repair_store(url) == (None, {})


def test_a_bucket_prefix_without_a_store_is_refused(s3_bucket):
    result = run_mcn("store", "verify", f"{s3_bucket}/nothing-here")
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_copy_refuses_an_unfinished_store_and_copies_back_from_a_bucket(finished, s3_bucket, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    (unfinished / store.MANIFEST).unlink()
    with pytest.raises(MCNError, match="unfinished"):
        copy_finished_store(unfinished, f"{s3_bucket}/unfinished")
    assert not storage.exists(f"{s3_bucket}/unfinished")
    url = f"{s3_bucket}/there"
    copy_finished_store(finished, url)
    back = tmp_path / "back"
    files = [p for p in storage.list_files(finished, recursive=True) if p.name != ".lock"]
    assert copy_finished_store(url, back) == len(files), "every file but the lock, which stays with its place"
    assert not (back / ".lock").exists()
    assert verify_store(back) == [] and store_info(back) == {**store_info(finished), "store": str(back)}


def test_extract_refuses_a_store_on_a_filesystem_without_exclusive_create(tmp_path):
    make_video(tmp_path / "videos" / "a.mp4", seconds=1, size=(64, 48))
    result = subprocess.run(
        [sys.executable, "-m", "mcn", "extract", str(tmp_path / "videos"), "--out", "memory://bucket/store"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "no exclusive create" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
