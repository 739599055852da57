"""mcn.pipeline.store_cli: `mcn store info|verify|export` on stores written by the job's own writer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from writer_store import write_store

from mcn import cli, store
from mcn.pipeline.store_cli import export_video, store_info, verify_store


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
    assert any("unreadable" in p for p in problems) and any("not in the manifest" in p for p in problems)
    assert cli.main(["store", "verify", str(damaged)]) == 1


def test_verify_finds_duplicates_and_missing_words(tmp_path):
    root = write_store(tmp_path / "store", ["a", "b"], max_videos=1)
    shutil.copy(store.list_shards(root)[0], store.list_shards(root)[1])  # "a" twice, "b" gone
    (root / store.WORDS).unlink()
    problems = verify_store(root)
    assert any("video ids differ from the manifest" in p for p in problems)
    assert any("manifest counts 2 videos, the shards hold 1" in p for p in problems)
    assert any(store.WORDS in p for p in problems)


def test_the_store_command_exits_zero_in_a_subprocess(finished):
    result = subprocess.run(
        [sys.executable, "-m", "mcn", "store", "verify", str(finished)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_migrate_makes_a_sound_format_2_store_of_the_jobs_store(finished, tmp_path, capsys):
    new = tmp_path / "format2"
    assert cli.main(["store", "migrate", str(finished), str(new)]) == 0
    assert "2 shards converted" in capsys.readouterr().out
    assert verify_store(new) == [] and store.StoreReader(new).format_version == 2
    old_reader, new_reader = store.StoreReader(finished), store.StoreReader(new)
    for video_id in old_reader.video_ids:
        old, migrated = old_reader.read(video_id), new_reader.read(video_id)
        np.testing.assert_array_equal(migrated.logmel, old.logmel)
        assert migrated.caption_text == old.caption_text
    assert store_info(new)["failures"] == store_info(finished)["failures"] == 1
    assert cli.main(["store", "migrate", str(new), str(tmp_path / "again")]) == 2, "already format 2"
