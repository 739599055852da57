"""The extraction job against damage, hostile files and misuse: every input row ends in exactly one place, nothing
is written outside the store, nothing hangs, no traceback, and the exit status says whether the work is done.

Most tests run the real job (`run_extraction` or the `mcn extract` command) on a local Ray; the relative-path test
runs it against a `ray start --head` cluster whose workers run in another working directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from media import make_video
from test_cluster import ray_cluster, wait_for_nodes  # noqa: F401 (the two-node `ray start` cluster fixture)

from mcn import store
from mcn.errors import MCNError
from mcn.extract import visual
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.job import run_extraction
from mcn.pipeline.store_cli import store_info, verify_store
from mcn.pipeline.writer import EXTRACTION, QUARANTINE, SUMMARY, StoreWriter, extraction_identity

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
WORDS = ["cut", "the", "onion", "now", "stir", "pot"]
GOOD = {"cook", "stir", "plain"}
HOSTILE_CAPTIONS = {"fifo", "zero", "nan", "reversed", "deep"}  # each fails alone with stage=captions


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    videos = root / "videos"
    make_video(videos / "cook.mp4", seconds=2, size=(96, 64))
    (videos / "cook.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\ncut the onion\n")
    make_video(videos / "stir.mp4", seconds=2, size=(96, 64), audio_hz=660)
    (videos / "stir.json").write_text('{"start": [0.5], "end": [1.5], "text": ["stir the pot"]}')
    make_video(videos / "plain.mp4", seconds=2, size=(64, 96), audio=False)
    (root / "vectors.txt").write_text(
        f"{len(WORDS)} 3\n" + "".join(f"{w} {i} 0.5 -1\n" for i, w in enumerate(WORDS))
    )
    return root


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the in-process jobs of this module (each job joins it instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def job_config(videos: Path, out: Path, corpus: Path, **changes) -> pipeline_config.PipelineConfig:
    config = pipeline_config.tiny_cpu()
    extract = dataclasses.replace(
        config.extract,
        text=dataclasses.replace(config.extract.text, word_vectors=str(corpus / "vectors.txt")),
    )
    return dataclasses.replace(
        config, input=str(videos), out=str(out), extract=extract, progress=False, **changes
    )


def content(root: Path) -> tuple[dict, dict]:
    """(video id -> its stored record, video id -> failure reason) of a finished store."""
    reader = store.StoreReader(root)
    videos = {r.video_id: r for r in reader.iter_videos()}
    return videos, {f["video_id"]: f["reason"] for f in reader.failures()}


def assert_same_videos(root: Path, expected_root: Path) -> None:
    """The same videos with the same captions and log-mel, and features equal up to float rounding (which
    videos share a model batch changes the last bit, see tests/test_extract_batching.py)."""
    videos, expected = content(root)[0], content(expected_root)[0]
    assert sorted(videos) == sorted(expected)
    for video_id, record in videos.items():
        other = expected[video_id]
        assert record.caption_text == other.caption_text, video_id
        np.testing.assert_array_equal(record.logmel, other.logmel, err_msg=video_id)
        for name in ("feat_2d", "feat_3d"):
            got, want = getattr(record, name), getattr(other, name)
            assert got.shape == want.shape, f"{video_id}: {name} has shape {got.shape}, not {want.shape}"
            np.testing.assert_allclose(
                got.astype(np.float32), want.astype(np.float32), atol=1e-4, err_msg=f"{video_id}: {name}"
            )


def assert_accounted(root: Path, num_inputs: int) -> None:
    """Every input row is in exactly one place, and summary.json, the failures table and `store info` agree."""
    reader = store.StoreReader(root)
    failures = reader.failures()
    failed_ids = [f["video_id"] for f in failures]
    assert len(set(failed_ids)) == len(failed_ids) and not set(failed_ids) & set(reader.video_ids)
    assert len(reader) + len(failures) == num_inputs
    summary = json.loads((root / SUMMARY).read_text())["store"]
    info = store_info(root)
    assert summary["videos"] == info["videos"] == len(reader)
    assert summary["failures"] == info["failures"] == len(failures)
    assert summary["failures_by_reason"] == info["failures_by_reason"]
    assert verify_store(root) == []


@pytest.fixture(scope="module")
def baseline(local_ray, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "store"
    summary = run_extraction(
        job_config(corpus / "videos", out, corpus, shards=pipeline_config.ShardConfig(max_videos=2))
    )
    assert summary["extracted"] == len(GOOD) and summary["failed"] == 0
    assert_accounted(out, len(GOOD))
    return out


def test_a_torn_shard_and_failures_table_are_repaired_by_rerunning_the_job(baseline, corpus, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(corpus / "videos", videos)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    out = tmp_path / "store"
    config = job_config(videos, out, corpus, shards=pipeline_config.ShardConfig(max_videos=2))
    run_extraction(config)
    assert content(out)[1] == {"broken": "corrupt"}
    for path in (store.list_shards(out)[0], out / store.FAILURES):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert verify_store(out) != []
    summary = run_extraction(config)
    assert summary["extracted"] == 2 and summary["failed"] == 1, "the torn shard's two videos and `broken`"
    assert summary["quarantine"]["videos_extracted_again"] == 2
    assert Path(summary["quarantine"]["folder"]).parent == out / QUARANTINE
    assert set(summary["quarantine"]["files"]) == {"shards/shard-000000.parquet", store.FAILURES}
    assert_accounted(out, len(GOOD) + 1)
    assert_same_videos(out, baseline)


def test_hostile_caption_files_fail_alone_and_nothing_hangs(local_ray, corpus, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(corpus / "videos", videos)
    for name in HOSTILE_CAPTIONS:
        shutil.copy(corpus / "videos" / "cook.mp4", videos / f"{name}.mp4")
    os.mkfifo(videos / "fifo.vtt")  # reading it would block forever
    (videos / "zero.srt").symlink_to("/dev/zero")  # reading it would never end
    (videos / "nan.json").write_text('{"start": [NaN], "end": [1.0], "text": ["cut"]}')
    (videos / "reversed.csv").write_text("start,end,text\n1.5,0.5,cut the onion\n")
    (videos / "deep.json").write_text("[" * 100_000)
    out = tmp_path / "store"
    summary = run_extraction(job_config(videos, out, corpus))
    assert summary["extracted"] == len(GOOD) and summary["failures_by_reason"] == {"bad_captions": 5}
    failures = {f["video_id"]: f for f in store.read_failures(out)}
    assert set(failures) == HOSTILE_CAPTIONS
    assert all(f["stage"] == "captions" and "\n" not in f["detail"] for f in failures.values()), failures
    assert "not_a_file" in failures["fifo"]["detail"] and "non-finite" in failures["nan"]["detail"]
    assert_accounted(out, len(GOOD) + len(HOSTILE_CAPTIONS))


def test_a_different_file_under_a_known_id_is_a_conflict_not_done(baseline, corpus, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(baseline, out)
    videos = tmp_path / "videos"
    shutil.copytree(
        corpus / "videos", videos, copy_function=shutil.copy2
    )  # same sizes and times: no conflict
    assert run_extraction(job_config(videos, out, corpus))["skipped_already_done"] == len(GOOD)
    make_video(videos / "stir.mp4", seconds=3, size=(96, 64))  # another video under the id "stir"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(MCNError, match=r"1 input videos are not the files .*'stir': .* has \d+ bytes"):
        run_extraction(job_config(videos, out, corpus))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_duplicate_bad_ids_are_refused_before_anything_is_written(corpus, tmp_path):
    manifest = tmp_path / "manifest.parquet"
    video = str(corpus / "videos" / "cook.mp4")
    pq.write_table(pa.table({"video_path": [video] * 3, "video_id": ["../x", "../x", "ok"]}), manifest)
    with pytest.raises(MCNError, match=r"'\.\./x': row 1, row 2"):
        run_extraction(job_config(manifest, tmp_path / "store", corpus))
    assert not (tmp_path / "store").exists()


def test_a_bad_weights_file_is_refused_before_the_store_records_its_fingerprint(corpus, tmp_path):
    good = tmp_path / "tiny2d.pth"
    torch.save(visual.build_model("resnet152-tiny").state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": RunsCodeWhenLoaded()}, evil)
    out = tmp_path / "store"
    for bad, message in ((truncated, "damaged or truncated"), (evil, "is refused: it is not a plain tensor")):
        config = job_config(corpus / "videos", out, corpus)
        config = dataclasses.replace(
            config,
            extract=dataclasses.replace(
                config.extract, models=dataclasses.replace(config.extract.models, weights_2d=str(bad))
            ),
        )
        with pytest.raises(MCNError, match=message) as error:
            run_extraction(config)
        assert "weights_only" not in str(error.value) and "\n" not in str(error.value)
        assert not (out / EXTRACTION).exists()
    right = dataclasses.replace(
        config,
        extract=dataclasses.replace(
            config.extract, models=dataclasses.replace(config.extract.models, weights_2d=str(good))
        ),
    )
    writer = StoreWriter(out, extraction_identity(right), right.shards)
    writer.open()  # the rerun with the right file is not refused
    writer.close()


class RunsCodeWhenLoaded:
    """A pickle that calls a function when unpickled (harmless here: print); a safe load refuses it."""

    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def mcn_extract(videos: Path, out: Path, corpus: Path, *extra: str, cwd: Path | None = None, **popen):
    command = [
        sys.executable, "-m", "mcn", "extract", str(videos), "--out", str(out), "--preset", "tiny_cpu",
        "--word-vectors", str(corpus / "vectors.txt"), "--no-progress", *extra,
    ]  # fmt: skip
    env = {**os.environ, "MCN_DEBUG": "", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_sigint_after_the_job_finished_exits_zero(ctrl_c_delivered, corpus, tmp_path):
    out = tmp_path / "store"
    job = mcn_extract(corpus / "videos", out, corpus, start_new_session=True)
    deadline = time.monotonic() + 400
    while not (out / store.MANIFEST).exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    signals = 0
    while job.poll() is None and time.monotonic() < deadline:  # Ctrl-C (to the process group) until it exits
        os.killpg(job.pid, signal.SIGINT)
        signals += 1
        time.sleep(0.05)
    _, stderr = job.communicate(timeout=60)
    assert signals, "the job ended before it could be interrupted"
    assert job.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "rerun" not in stderr, stderr[-3000:]
    assert verify_store(out) == []


def test_ctrl_c_twice_exits_130_without_traceback_and_the_rerun_completes(ctrl_c_delivered, corpus, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(corpus / "videos", videos)
    for index in range(4):
        make_video(videos / f"extra{index}.mp4", seconds=2, size=(96, 64))
    out = tmp_path / "store"
    job = mcn_extract(videos, out, corpus, "--max-videos-per-shard", "1", start_new_session=True)
    deadline = time.monotonic() + 400
    while not store.list_shards(out) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, job.communicate()[1][-3000:]
    os.killpg(job.pid, signal.SIGINT)
    time.sleep(0.3)
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGINT)  # the second Ctrl-C, while the job cleans up
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "interrupted; rerun the same command to resume" in stderr
    rerun = mcn_extract(videos, out, corpus, "--max-videos-per-shard", "1")
    _, stderr = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, stderr[-3000:]
    assert_accounted(out, len(GOOD) + 4)


def test_an_unreachable_cluster_is_one_line_and_leaves_the_store_as_it_was(baseline, corpus, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(baseline, out)
    videos = tmp_path / "videos"
    shutil.copytree(corpus / "videos", videos, copy_function=shutil.copy2)
    make_video(videos / "new.mp4", seconds=1, size=(64, 64))  # work to do: the job needs the cluster
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    job = mcn_extract(videos, out, corpus, "--address", f"127.0.0.1:{port}")
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in stderr
    assert (out / store.MANIFEST).exists() and verify_store(out) == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a small file system")
def test_a_full_disk_is_one_line_and_the_store_completes_once_there_is_room(corpus, tmp_path):
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    disk = tmp_path / "disk"
    disk.mkdir()
    extract = [
        sys.executable, "-m", "mcn", "extract", str(corpus / "videos"), "--out", str(disk / "store"),
        "--preset", "tiny_cpu", "--word-vectors", str(corpus / "vectors.txt"), "--no-progress",
        "--max-videos-per-shard", "1",
    ]  # fmt: skip
    script = f"""
mount -t tmpfs -o size=2m none {disk} || exit 99
head -c 2024k /dev/zero > {disk}/filler  # about 24 kB left: the first shard does not fit
{" ".join(extract)} > /dev/null 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc
rm {disk}/filler
{" ".join(extract)} > /dev/null 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc
{sys.executable} -m mcn store verify {disk}/store > {tmp_path}/verify.out; echo $? > {tmp_path}/verify.rc
"""
    env = {**os.environ, "MCN_DEBUG": "", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, timeout=800)
    if result.returncode == 99:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    first = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "2", first[-3000:]
    assert "no space left on the device" in first and "Traceback" not in first, first[-3000:]
    second = (tmp_path / "second.err").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", second[-3000:]
    verify = (tmp_path / "verify.out").read_text()
    assert (tmp_path / "verify.rc").read_text().strip() == "0", verify
    assert f"{len(GOOD)} videos" in verify


def test_relative_paths_reach_cluster_workers_that_run_in_another_folder(ray_cluster, corpus, tmp_path):  # noqa: F811
    """Ray workers of a `ray start` cluster run in the folder `ray start` ran in, not the driver's."""
    wait_for_nodes(ray_cluster, 2)
    shutil.copytree(corpus / "videos", tmp_path / "videos")
    shutil.copy(corpus / "vectors.txt", tmp_path / "vectors.txt")
    command = [
        sys.executable, "-m", "mcn", "extract", "videos", "--out", "store", "--preset", "tiny_cpu",
        "--word-vectors", "vectors.txt", "--address", ray_cluster["gcs"], "--no-progress",
    ]  # fmt: skip
    env = {**ray_cluster["env"], "MCN_DEBUG": ""}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reader = store.StoreReader(tmp_path / "store")
    assert set(reader.video_ids) == GOOD and reader.failures() == [], reader.failures()
    assert reader.read("cook", ["captions"]).caption_text == ["cut the onion"]
    assert reader.read("stir", ["captions"]).caption_text == ["stir the pot"]
    config = json.loads((tmp_path / "store" / "config.json").read_text())
    assert config["input"] == str(tmp_path / "videos") and os.path.isabs(
        config["extract"]["text"]["word_vectors"]
    )
