"""`mcn search`: the moment index is built once per checkpoint, saved atomically and reused; a store that
cannot be written keeps its index in a local folder instead."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_store import make_record, make_store, save_tiny_checkpoint, tiny_model

from mcn import cli, storage
from mcn.errors import MCNError
from mcn.eval import config, embed, search
from mcn.extract import asr
from mcn.store import StoreReader, copy_store


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty cache folder, named by $MCN_CACHE_DIR for this process and the ones it starts: no test reads
    or writes the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MCN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    make_store(root / "store", num_videos=4, seconds=23, silent=("vid03",))
    return root


def test_moment_spans_cover_the_video():
    video = make_record("v", 23, np.random.default_rng(0))
    spans = search.moment_spans(video, config.WindowConfig())
    windows = [(s, e) for s, e, kind in spans if kind == "window"]
    assert windows == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 23.0)]
    assert [kind for *_, kind in spans].count("caption") == 2
    short = make_record("s", 4, np.random.default_rng(0))
    assert search.moment_spans(short, config.WindowConfig(captions=False)) == [(0.0, 4.0, "window")]


def test_index_is_built_once_and_reused(store):
    reader = StoreReader(store / "store")
    model = tiny_model(seed=0)
    settings = config.search_quick_cpu()
    index, path, built = search.index_for(model, reader, settings)
    assert built and path.exists() and path.parent == reader.root / "index"
    assert path.with_suffix(".config.json").exists()  # the config that built it
    assert len(index.video_ids) == 4 * (4 + 2)  # four windows and two captions per video
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind
    again, path_again, built_again = search.index_for(model, reader, settings)
    assert not built_again and path_again == path
    np.testing.assert_array_equal(again.embeddings_MD, index.embeddings_MD)
    np.testing.assert_array_equal(again.video_ids, index.video_ids)
    other, other_path, other_built = search.index_for(tiny_model(seed=1), reader, settings)
    assert other_built and other_path != path
    floor = replace(settings, audio=config.AudioConfig(logmel_padding="floor"))
    assert search.index_for(model, reader, floor)[1] != path  # the padding is part of the fingerprint

    # the index row of a window equals a direct embedding of that clip (video + audio; video only when silent)
    row = int(np.flatnonzero((index.video_ids == "vid01") & (index.starts == 5.0))[0])
    record = reader.read("vid01")
    inputs = embed.clip_inputs(record, 5.0, 15.0, 1000)
    with torch.no_grad():
        v = model.encode_video(torch.from_numpy(inputs["video"])[None])[0]
        a = model.encode_audio(torch.from_numpy(inputs["audio"])[None], torch.tensor([inputs["nframes"]]))[0]
    np.testing.assert_allclose(index.embeddings_MD[row], (v + a).numpy(), rtol=1e-4, atol=1e-5)
    silent = int(np.flatnonzero((index.video_ids == "vid03") & (index.starts == 0.0))[0])
    inputs = embed.clip_inputs(reader.read("vid03"), 0.0, 10.0, 1000)
    with torch.no_grad():
        v = model.encode_video(torch.from_numpy(inputs["video"])[None])[0]
    np.testing.assert_allclose(index.embeddings_MD[silent], v.numpy(), rtol=1e-4, atol=1e-5)

    vectorizer = embed.TextVectorizer(reader.words)
    scores = search.query_scores(model, index, vectorizer, "crack the eggs")
    assert scores.shape == (len(index.video_ids),)
    with pytest.raises(MCNError, match="none of the words"):
        search.query_scores(model, index, vectorizer, "zzz qqq")


def test_the_index_of_a_bucket_store_is_kept_in_the_bucket(store, s3_bucket):
    url = f"{s3_bucket}/store"
    copy_store(store / "store", url)
    reader = StoreReader(url)
    model = tiny_model(seed=4)
    settings = config.search_quick_cpu()
    index, path, built = search.index_for(model, reader, settings)
    assert (
        built
        and path == f"{url}/index/{search.fingerprint(model, reader, settings.windows, settings.audio)}.npz"
    )
    assert storage.is_file(path) and storage.is_file(str(path).removesuffix(".npz") + ".config.json")
    again, path_again, built_again = search.index_for(model, StoreReader(url), settings)
    assert not built_again and path_again == path
    for name in ("video_ids", "starts", "ends", "kinds", "embeddings_MD"):
        np.testing.assert_array_equal(getattr(again, name), getattr(index, name))
    local = search.build_index(
        model, StoreReader(store / "store"), settings.windows, settings.audio, settings.runtime.batch_size
    )
    np.testing.assert_array_equal(index.embeddings_MD, local.embeddings_MD)


def test_search_cli(store, capsys, caplog):
    checkpoint = save_tiny_checkpoint(store / "run" / "step-000001", seed=2)
    argv = [
        "search",
        str(store / "store"),
        "--checkpoint",
        str(checkpoint),
        "whisk",
        "the",
        "batter",
        "-k",
        "3",
        "--preset",
        "quick_cpu",
    ]
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "built index" in caplog.text and "videos for 'whisk the batter'" in first
    moments = first.split("moments:")[1].strip().splitlines()
    assert len(moments) == 3 and all("vid0" in line and " s  score " in line for line in moments)
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    assert "using index" in caplog.text
    # no word2vec file: the word would vanish from the query
    assert cli.main(["search", str(store / "store"), "--checkpoint", str(checkpoint), "omelette"]) == 2
    assert "'omelette'" in capsys.readouterr().err


# ---- stores that cannot be written ------------------------------------------------------------------------

QUERY = ["whisk", "the", "batter", "-k", "3", "--preset", "quick_cpu"]


def bucket_objects(url: str) -> dict[str, int]:
    return {storage.relative(p, url): storage.size(p) for p in storage.list_files(url, recursive=True)}


def folder_state(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns)
        for p in [root, *root.rglob("*")]
    }


def run_search(store, checkpoint, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``mcn search`` in its own process, with INFO logs on stderr."""
    command = [*prefix, sys.executable, "-m", "mcn", "search", str(store), "--checkpoint", str(checkpoint)]
    env = {**os.environ, "MCN_LOG_LEVEL": "INFO", "MCN_DEBUG": ""}
    return subprocess.run([*command, *QUERY, *extra], capture_output=True, text=True, env=env, timeout=300)


def writable_results(store, checkpoint, capsys) -> str:
    """What `mcn search` prints for the query on a writable copy of the store."""
    assert cli.main(["search", str(store), "--checkpoint", str(checkpoint), *QUERY]) == 0
    return capsys.readouterr().out


def test_local_index_folder_is_named_after_the_store_location(tmp_path, monkeypatch):
    monkeypatch.delenv("MCN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert storage.cache_folder() == tmp_path / "xdg" / "mcn"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty is unset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.cache_folder() == tmp_path / "home" / ".cache" / "mcn"
    monkeypatch.setenv("MCN_CACHE_DIR", str(tmp_path / "mine"))
    assert storage.cache_folder() == tmp_path / "mine"
    assert asr.default_whisper_dir() == tmp_path / "mine" / "whisper-base-ct2"  # the one cache folder

    (tmp_path / "a").mkdir()
    (tmp_path / "b").symlink_to(tmp_path / "a")
    folder = search.local_index_folder(tmp_path / "a")
    assert folder.parent == tmp_path / "mine" / search.LOCAL_INDEX_DIR
    assert search.local_index_folder(tmp_path / "b") == folder  # the same store by another name
    monkeypatch.chdir(tmp_path)
    assert search.local_index_folder("a") == folder
    assert search.local_index_folder(tmp_path / "c") != folder
    remote = search.local_index_folder("s3://bucket/stores/a")
    assert remote.parent == folder.parent and remote.name.startswith("s3-bucket-stores-a-")
    assert search.local_index_folder("s3://bucket/stores/a/") == remote
    assert remote not in {
        search.local_index_folder("s3://bucket/stores/b"),
        search.local_index_folder("s3://other/stores/a"),
    }
    chosen = search.local_index_folder("s3://bucket/stores/a", str(tmp_path / "chosen"))
    assert chosen == tmp_path / "chosen" / remote.name
    with pytest.raises(MCNError, match="--index-dir must name a folder"):
        config.SearchConfig(index_dir=" ")


def test_a_changed_manifest_is_a_new_index(tmp_path):
    make_store(tmp_path / "store", num_videos=2, seconds=12)
    model = tiny_model(seed=0)
    settings = config.search_quick_cpu()
    _, path, built = search.index_for(model, StoreReader(tmp_path / "store"), settings)
    assert built
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    manifest["extractors"] = {"feat_2d": {"weights_sha256": "another"}}  # the same shards, extracted anew
    (tmp_path / "store" / "manifest.json").write_text(json.dumps(manifest))
    _, other, built = search.index_for(model, StoreReader(tmp_path / "store"), settings)
    assert built and other != path


def test_a_bucket_store_that_refuses_writes_keeps_its_index_outside(
    store, s3_bucket, s3_deny_writes, cache, caplog
):
    url = f"{s3_bucket}/store"
    copy_store(store / "store", url)
    s3_deny_writes(s3_bucket, "store/")
    before = bucket_objects(url)
    model = tiny_model(seed=5)
    settings = config.search_quick_cpu()
    with caplog.at_level(logging.WARNING):
        index, path, built = search.index_for(model, StoreReader(url), settings)
    folder = search.local_index_folder(url)
    assert (
        built
        and path
        == folder / f"{search.fingerprint(model, StoreReader(url), settings.windows, settings.audio)}.npz"
    )
    assert path.exists() and path.with_suffix(".config.json").exists() and folder.parent.parent == cache
    assert (
        "cannot be written" in caplog.text and "ACCESS_DENIED" in caplog.text and str(folder) in caplog.text
    )
    assert bucket_objects(url) == before  # the store is not changed
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again, path_again, built_again = search.index_for(model, StoreReader(url), settings)
    assert not built_again and path_again == path and not caplog.text
    local = search.build_index(
        model, StoreReader(store / "store"), settings.windows, settings.audio, settings.runtime.batch_size
    )
    for name in ("video_ids", "starts", "ends", "kinds", "embeddings_MD"):
        np.testing.assert_array_equal(getattr(again, name), getattr(local, name))

    blocked = cache / "a-file"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a folder")
    with pytest.raises(MCNError, match="nor in .*--index-dir"):
        search.index_for(model, StoreReader(url), replace(settings, index_dir=str(blocked), rebuild=True))


@pytest.mark.slow
def test_search_cli_on_a_bucket_store_that_refuses_writes(store, s3_bucket, s3_deny_writes, cache, capsys):
    checkpoint = save_tiny_checkpoint(store / "run-bucket" / "step-000001", seed=6)
    url = f"{s3_bucket}/store"
    copy_store(store / "store", url)
    s3_deny_writes(s3_bucket, "store/")
    before = bucket_objects(url)
    first = run_search(url, checkpoint)
    assert first.returncode == 0, first.stderr
    folder = search.local_index_folder(url)
    assert "cannot be written" in first.stderr and f"built index {folder}" in first.stderr
    assert [p.suffix for p in sorted(folder.iterdir())] == [".json", ".npz"]
    second = run_search(url, checkpoint)
    assert second.returncode == 0, second.stderr
    assert f"using index {folder}" in second.stderr and "cannot be written" not in second.stderr
    assert bucket_objects(url) == before
    assert first.stdout == second.stdout == writable_results(store / "store", checkpoint, capsys)


@pytest.mark.slow
def test_search_cli_on_a_read_only_folder(store, tmp_path, cache, capsys):
    checkpoint = save_tiny_checkpoint(store / "run-folder" / "step-000001", seed=7)
    root = tmp_path / "read-only"
    copy_store(store / "store", root)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes through any mode bits: run the search without that privilege
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv (util-linux) is not there to drop the right to write")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        refused = "try:\n    open(PATH, 'w')\nexcept PermissionError:\n    raise SystemExit(3)"
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", refused.replace("PATH", repr(str(root / "probe")))],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 3:
            pytest.skip(
                f"cannot make a folder read-only for this user (root that setpriv cannot restrict?): {probe.stderr}"
            )
        before = folder_state(root)
        first = run_search(root, checkpoint, prefix=prefix)
        assert first.returncode == 0, first.stderr
        folder = search.local_index_folder(root)
        assert "cannot be written" in first.stderr and "Permission denied" in first.stderr
        assert f"built index {folder}" in first.stderr and folder_state(root) == before
        chosen = tmp_path / "chosen"
        second = run_search(root, checkpoint, "--index-dir", str(chosen), prefix=prefix)
        assert second.returncode == 0 and f"built index {chosen / folder.name}" in second.stderr
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert first.stdout == second.stdout == writable_results(store / "store", checkpoint, capsys)
