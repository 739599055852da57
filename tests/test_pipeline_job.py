"""The Ray extraction job end to end, on a Ray cluster this module starts (``ray start --head``, 2 CPUs, own ports
and temp dir; torn down by killing only that cluster's processes).

Covers: the right videos in shards and the broken ones in the failures table with their reasons; features equal
to ``mcn.extract.extract_video`` for every video, here and on a sample corpus whose model batches mix videos;
``model_calls`` adds up to the store's rows; resume after a killed worker and after a SIGKILLed driver gives
the same per-video content as an uninterrupted run; a killed model actor whose batch held several videos
re-queues exactly those; hostile ids never write outside STORE; ``ray job submit`` runs the job, with speech
recognition for a video without captions.

Features of two runs are compared up to float rounding (a batch's make-up changes the last bit, see
tests/test_extract_batching.py); everything else is compared exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from media import FFMPEG, make_video

from mcn import cli, store
from mcn.configs import apply_overrides
from mcn.errors import MCNError
from mcn.extract import extract_video
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.inputs import read_inputs
from mcn.pipeline.job import run_extraction
from mcn.pipeline.store_cli import verify_store

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
WORDS = ["cut", "the", "onion", "now", "stir", "pot", "slowly"]
GOOD = {"cook", "silent", "plain"}
EXPECTED_FAILURES = {"corrupt": "corrupt", "empty": "empty", "badcap": "bad_captions"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Processes of the cluster started with ``temp_dir`` (its daemons carry the path) and their descendants."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(proc.info["cmdline"] or []):
            roots.append(proc)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.update({c.pid: c for c in root.children(recursive=True)})
    return list(found.values())


@dataclasses.dataclass
class Cluster:
    address: str
    dashboard: str
    temp_dir: str


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(
        prefix="mcnray", dir="/tmp"
    )  # short: Ray's socket paths must stay < 108 bytes
    port, dashboard = _free_port(), _free_port()
    ports = {
        name: _free_port()
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
        )
    }
    # No token: the default one in ~/.ray is shared with (and rewritten by) every other Ray on this machine, and a
    # process that imported ray has already cached it. The test cluster is short-lived and listens locally.
    auth = {"RAY_AUTH_MODE": "disabled"}
    saved = {name: os.environ.get(name) for name in auth}
    os.environ.update(auth)  # for this process's ray.init and the drivers the tests start
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_raylet_start_wait_time_s": "120"}
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--disable-usage-stats",
        *[f"--{name}={value}" for name, value in ports.items()],
    ]
    try:
        started = subprocess.run(command, env=env, timeout=300, capture_output=True, text=True)
        assert started.returncode == 0, f"ray start failed: {started.stderr[-3000:]}"
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        yield Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", temp_dir)
    finally:
        ray.shutdown()
        for proc in _cluster_processes(temp_dir):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    media = root / "videos"
    make_video(media / "cook.mp4", seconds=4, size=(160, 120))
    (media / "cook.vtt").write_text(
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\ncut the onion\n\n"
        "00:00:02.000 --> 00:00:04.000\nnow stir the pot slowly\n"
    )
    make_video(media / "silent.mp4", seconds=3, size=(128, 96), audio=False, pattern="smptebars")
    (media / "silent.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nstir the pot\n")
    make_video(media / "plain.mp4", seconds=3, size=(96, 128), audio_hz=880)
    (media / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    (media / "empty.mp4").write_bytes(b"")
    make_video(media / "badcap.mp4", seconds=2)
    (media / "badcap.json").write_text('{"start": [0.0, 1.0], "end": [1.0]')
    vectors = np.random.default_rng(0).standard_normal((len(WORDS), 4)).round(3)
    lines = [f"{len(WORDS)} 4"] + [
        f"{w} " + " ".join(map(str, v)) for w, v in zip(WORDS, vectors, strict=True)
    ]
    (root / "vectors.txt").write_text("\n".join(lines) + "\n")
    return root


def job_config(corpus: Path, out: Path, **shards) -> pipeline_config.PipelineConfig:
    config = dataclasses.replace(pipeline_config.tiny_cpu(), input=str(corpus / "videos"), out=str(out))
    extract = dataclasses.replace(
        config.extract,
        text=dataclasses.replace(config.extract.text, word_vectors=str(corpus / "vectors.txt")),
    )
    return dataclasses.replace(
        config, extract=extract, progress=False, shards=dataclasses.replace(config.shards, **shards)
    )


FIELDS = (
    "feat_2d",
    "feat_3d",
    "logmel",
    "caption_text",
    "caption_token_ids",
    "caption_start",
    "duration",
    "caption_source",
)


FEATURES = ("feat_2d", "feat_3d")


def store_content(root: Path) -> tuple[dict, dict]:
    """Per-video content (features, captions, ids) and failures (id -> reason) of a store, for comparisons."""
    reader = store.StoreReader(root)
    videos = {}
    for record in reader.iter_videos():
        values = [getattr(record, name) for name in FIELDS]
        videos[record.video_id] = {
            name: (value.tobytes(), value.shape)
            if isinstance(value, np.ndarray)
            else [ids.tolist() for ids in value]
            if name == "caption_token_ids"
            else value
            for name, value in zip(FIELDS, values, strict=True)
        }
    return videos, {f["video_id"]: f["reason"] for f in reader.failures()}


def failure_details(root: Path) -> list[dict]:
    return store.read_failures(root)


def assert_same_content(root: Path, expected_root: Path) -> None:
    (videos, failures), (expected_videos, expected_failures) = (
        store_content(root),
        store_content(expected_root),
    )
    assert failures == expected_failures, failure_details(root)
    assert sorted(videos) == sorted(expected_videos)
    for video_id, fields in videos.items():
        for name in FIELDS:
            if name in FEATURES:
                (data, shape), (expected_data, expected_shape) = fields[name], expected_videos[video_id][name]
                assert shape == expected_shape, f"{video_id}: {name} has shape {shape}, not {expected_shape}"
                np.testing.assert_allclose(
                    np.frombuffer(data, np.float16).astype(np.float32),
                    np.frombuffer(expected_data, np.float16).astype(np.float32),
                    atol=1e-4,
                    err_msg=f"{video_id}: {name} differs",
                )
            else:
                assert fields[name] == expected_videos[video_id][name], f"{video_id}: {name} differs"


def assert_like_extract_video(reader: store.StoreReader, items: list, extract_config) -> None:
    """Every stored video has the features, log-mel and captions that ``extract_video`` gives it alone."""
    checked = 0
    for item in items:
        if item.video_id not in reader.video_ids:
            continue
        expected = extract_video(item.video_path, extract_config, item.caption_path)
        record = reader.read(item.video_id)
        for name in FEATURES:
            stored, alone = getattr(record, name), getattr(expected, name)
            assert stored.shape == alone.shape, (item.video_id, name)
            # (equal up to float rounding: the actors run one torch thread, this process several)
            np.testing.assert_allclose(stored.astype(np.float32), alone, rtol=1e-2, atol=1e-4)
        if expected.logmel is None:
            assert record.logmel.shape == (40, 0)
        else:
            np.testing.assert_array_equal(record.logmel, expected.logmel)
        assert record.caption_text == [c[2] for c in expected.captions], item.video_id
        assert record.caption_start.tolist() == [np.float32(c[0]) for c in expected.captions]
        assert record.caption_source == expected.caption_source
        assert [ids.tolist() for ids in record.caption_token_ids] == [
            ids.tolist() for ids in expected.caption_token_ids
        ]
        checked += 1
    assert checked == len(reader.video_ids)


def assert_model_calls_add_up(root: Path) -> dict:
    """summary.json's model_calls: the rows through the networks are the store's rows, in full batches."""
    calls = json.loads((root / "summary.json").read_text())["model_calls"]
    reader = store.StoreReader(root)
    rows = {"2d": 0, "3d": 0}
    for record in reader.iter_videos():
        rows["2d"] += len(record.feat_2d)
        rows["3d"] += len(record.feat_3d)
    config = json.loads((root / "config.json").read_text())["extract"]["runtime"]
    for kind in ("2d", "3d"):
        assert calls[kind]["batch"] == config[f"batch_{kind}"]
        assert calls[kind]["items"] == rows[kind], (kind, calls, rows)
        assert math.ceil(rows[kind] / calls[kind]["batch"]) <= calls[kind]["calls"] <= rows[kind]
    return calls


@pytest.fixture(scope="module")
def baseline(cluster, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "store"
    summary = run_extraction(job_config(corpus, out, max_videos=2))
    assert summary["extracted"] == len(GOOD)
    return out


def test_videos_land_in_shards_and_failures_with_reasons(baseline, corpus):
    reader = store.StoreReader(baseline)
    assert set(reader.video_ids) == GOOD
    assert [len(s["video_ids"]) for s in reader.manifest["shards"]] == [2, 1]
    assert {f["video_id"]: f["reason"] for f in reader.failures()} == EXPECTED_FAILURES
    assert verify_store(baseline) == []
    summary = store_content(baseline)
    assert summary[1] == EXPECTED_FAILURES

    # The same features as the per-video extractor, put back together from frame windows.
    items, _ = read_inputs(str(corpus / "videos"))
    assert_like_extract_video(reader, items, job_config(corpus, baseline).extract)
    cook = reader.read("cook")
    assert cook.feat_2d.shape == (4, 2048) and cook.feat_3d.shape == (6, 2048)
    assert cook.caption_text == ["cut the onion", "now stir the pot slowly"] and cook.caption_source == "vtt"
    assert_model_calls_add_up(baseline)
    words = reader.words
    assert [words.words[list(words.token_ids).index(i)] for i in cook.caption_token_ids[0]] == [
        "cut",
        "the",
        "onion",
    ]
    silent = reader.read("silent")
    assert not silent.has_audio and silent.logmel.shape == (40, 0) and silent.caption_text == ["stir the pot"]
    assert reader.read("plain").caption_source == "none" and reader.read("plain").num_captions == 0

    manifest = reader.manifest
    assert manifest["vocabulary"]["dim"] == 4 and len(manifest["vocabulary"]["fingerprint"]) == 64
    assert manifest["extractors"]["feat_2d"]["weights_sha256"] == "random-init"
    assert manifest["counts"] == {**manifest["counts"], "videos": 3, "failures": 3}
    assert (baseline / "summary.json").exists() and (baseline / "config.json").exists()


def test_rerun_is_a_no_op_and_other_configs_are_refused(baseline, corpus):
    before = store_content(baseline)
    summary = run_extraction(job_config(corpus, baseline, max_videos=2))
    assert summary["extracted"] == 0 and summary["skipped_already_done"] == 6
    assert store_content(baseline) == before
    config = job_config(corpus, baseline)
    other = dataclasses.replace(
        config.extract, models=dataclasses.replace(config.extract.models, model_2d="resnet152")
    )
    with pytest.raises(MCNError, match="model_2d"):
        run_extraction(dataclasses.replace(config, extract=other))


def test_hostile_ids_never_write_outside_the_store(corpus, tmp_path):
    video = str(corpus / "videos" / "cook.mp4")
    manifest = tmp_path / "in" / "manifest.parquet"
    manifest.parent.mkdir()
    ids = ["../evil", "a/b", "x\x00y", "", "..\\up"]
    pq.write_table(pa.table({"video_path": [video] * len(ids), "video_id": ids}), manifest)
    before = set(tmp_path.rglob("*"))
    config = dataclasses.replace(job_config(corpus, tmp_path / "out" / "store"), input=str(manifest))
    summary = run_extraction(config)
    assert summary["failures_by_reason"] == {"bad_video_id": len(ids)}
    written = set(tmp_path.rglob("*")) - before
    assert all((tmp_path / "out") in p.parents or p == tmp_path / "out" for p in written)
    failures = store.read_failures(tmp_path / "out" / "store")
    assert sorted(f["video_id"] for f in failures) == sorted(ids)
    assert all(f["stage"] == "input" for f in failures)
    (tmp_path / "bad.csv").write_text("path\nx.mp4\n")
    assert cli.main(["extract", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "s2")]) == 2


# Batches larger than any one video of the tiny sample corpus (3-6 s: at most 6 frames and 9 clips), so that
# every full batch holds several videos, and a wait long enough that only full batches go out until nothing
# more can arrive.
SAMPLE_OVERRIDES = {
    "extract.runtime.batch_2d": "16",
    "extract.runtime.batch_3d": "16",
    "stages.batch_wait_s": "60",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    from mcn.sample.config import tiny
    from mcn.sample.corpus import generate_corpus

    corpus = tmp_path_factory.mktemp("sample") / "corpus"
    generate_corpus(corpus, num_videos=12, seed=0, config=tiny())
    return corpus


def sample_config(corpus: Path, out: Path, **overrides: str) -> pipeline_config.PipelineConfig:
    config = apply_overrides(
        pipeline_config.tiny_cpu(),
        {"extract.text.word_vectors": str(corpus / "word2vec.bin"), **SAMPLE_OVERRIDES, **overrides},
    )
    return dataclasses.replace(config, input=str(corpus), out=str(out), progress=False)


@pytest.fixture(scope="module")
def sample_store(cluster, sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample_store") / "store"
    summary = run_extraction(sample_config(sample, out))
    assert summary["extracted"] >= 8 and summary["failed"] >= 1
    return out


def test_batches_mixing_sample_videos_give_each_video_its_own_features(sample, sample_store):
    reader = store.StoreReader(sample_store)
    calls = assert_model_calls_add_up(sample_store)
    # Fewer forward passes than videos: the batches held windows of several videos.
    assert calls["2d"]["calls"] < len(reader.video_ids) and calls["3d"]["calls"] < len(reader.video_ids)
    items, _ = read_inputs(str(sample))
    assert_like_extract_video(reader, items, sample_config(sample, sample_store).extract)
    assert verify_store(sample_store) == []


def _kill_when_busy(temp_dir: str, titles: list[str], killed: list[str], stop: threading.Event) -> None:
    """SIGKILL the first process of the cluster running each of ``titles`` (Ray's process titles)."""
    remaining = list(titles)
    while remaining and not stop.is_set():
        for proc in _cluster_processes(temp_dir):
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            match = next((t for t in remaining if title.startswith(t)), None)
            if match:
                proc.send_signal(signal.SIGKILL)
                killed.append(match)
                remaining.remove(match)
        time.sleep(0.05)


def test_killed_workers_resume_to_the_same_content(cluster, baseline, corpus, tmp_path):
    killed: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_kill_when_busy,
        args=(cluster.temp_dir, ["ray::decode_video", "ray::ModelActor.run"], killed, stop),
    )
    watcher.start()
    try:
        run_extraction(job_config(corpus, tmp_path / "store", max_videos=1))
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was caught mid-task"
    assert_same_content(tmp_path / "store", baseline)
    assert verify_store(tmp_path / "store") == []


def test_a_killed_model_actor_requeues_exactly_the_videos_its_batch_held(
    cluster, sample, sample_store, tmp_path, caplog
):
    """With no retries by Ray, a model call lost with its actor reaches the driver: the videos whose pieces it
    held start again, the others are untouched, and every video still ends up in the store exactly once."""
    killed: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_kill_when_busy, args=(cluster.temp_dir, ["ray::ModelActor.run"], killed, stop)
    )
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="mcn.pipeline.job"):
            summary = run_extraction(
                sample_config(sample, tmp_path / "store", **{"stages.model_call_retries": "0"})
            )
    finally:
        stop.set()
        watcher.join()
    assert killed, "no model actor was caught mid-call"
    held = [set(r.args[3]) for r in caplog.records if "call failed" in r.msg]
    requeued = [r.args[0] for r in caplog.records if r.msg.startswith("re-queuing")]
    assert held and max(map(len, held)) >= 2, held  # the lost batch held pieces of several videos
    assert sorted(requeued) == sorted(v for videos in held for v in videos)  # those, once each; no other
    assert summary["failures_by_reason"].get("worker_died", 0) == 0
    assert_same_content(tmp_path / "store", sample_store)
    assert verify_store(tmp_path / "store") == []


def kill_after_the_first_shard(command: list[str], out) -> None:
    """Start the ``mcn extract`` command and SIGKILL it once the store ``out`` (a folder or URL) has a shard."""
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not store.list_shards(out) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]


def test_killed_driver_resumes_to_the_same_content(cluster, baseline, corpus, tmp_path):
    out = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "mcn",
        "extract",
        str(corpus / "videos"),
        "--out",
        str(out),
        "--preset",
        "tiny_cpu",
        "--word-vectors",
        str(corpus / "vectors.txt"),
        "--address",
        cluster.address,
        "--max-videos-per-shard",
        "1",
        "--no-progress",
    ]
    kill_after_the_first_shard(command, out)
    assert not (out / store.MANIFEST).exists()
    summary = run_extraction(job_config(corpus, out, max_videos=1))
    assert summary["skipped_already_done"] >= 1
    assert_same_content(out, baseline)
    assert verify_store(out) == []


def test_ray_job_submit_with_speech_recognition(cluster, corpus, tmp_path):
    from mcn.sample.speech import SpeechSynthesizer, write_wav

    speech = SpeechSynthesizer()("Slice the tomato and boil the pasta.")
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech.samples.astype(np.float32) / 32768.0, speech.sample_rate)
    videos = tmp_path / "videos"
    videos.mkdir()
    subprocess.run(
        [
            FFMPEG,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=96x64:rate=25:duration={speech.duration:.2f}",
            "-i",
            str(wav),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(videos / "talk.mp4"),
        ],
        check=True,
    )
    out = tmp_path / "store"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--",
        sys.executable,
        "-m",
        "mcn",
        "extract",
        str(videos),
        "--out",
        str(out),
        "--preset",
        "tiny_cpu",
        "--asr",
        "--no-progress",
    ]
    result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = store.StoreReader(out).read("talk")
    assert record.caption_source == "asr"
    heard = " ".join(record.caption_text).lower()
    assert {"slice", "tomato", "boil", "pasta"} <= set(heard.replace(".", " ").replace(",", " ").split())
    assert 0.0 <= record.caption_start[0] < record.caption_end[-1] <= speech.duration + 1.0


def test_retry_failed_moves_fixed_videos_out_of_the_failures(cluster, baseline, corpus, tmp_path):
    shutil.copytree(corpus, tmp_path / "corpus")
    shutil.copytree(baseline, tmp_path / "store")
    (tmp_path / "corpus" / "videos" / "badcap.json").write_text(
        '{"start": [0.0], "end": [1.5], "text": ["stir it"]}'
    )
    config = job_config(tmp_path / "corpus", tmp_path / "store", max_videos=2)
    summary = run_extraction(dataclasses.replace(config, retry_failed=True))
    assert summary["extracted"] == 1 and summary["failures_by_reason"] == {"corrupt": 1, "empty": 1}
    reader = store.StoreReader(tmp_path / "store")
    assert set(reader.video_ids) == GOOD | {"badcap"} and reader.read("badcap").caption_text == ["stir it"]
    assert {f["video_id"] for f in reader.failures()} == {"corrupt", "empty"}
    assert verify_store(tmp_path / "store") == []


def test_frames_in_flight_must_fill_a_model_batch():
    config = pipeline_config.tiny_cpu()
    assert apply_overrides(config, {"stages.windows_in_flight": "1"}).stages.windows_in_flight == 1
    with pytest.raises(MCNError, match="cannot fill one model batch"):
        apply_overrides(config, {"stages.windows_in_flight": "1", "extract.runtime.batch_2d": "31"})
    with pytest.raises(MCNError, match="batch_wait_s"):
        apply_overrides(config, {"stages.batch_wait_s": "-1"})


def test_the_command_extracts_videos_from_a_bucket_and_records_failed_fetches(
    corpus, s3_bucket, s3_deny_reads, tmp_path
):
    from mcn import storage

    for name in ("cook.mp4", "cook.vtt", "plain.mp4"):
        storage.copy(corpus / "videos" / name, f"{s3_bucket}/videos/{name}")
    storage.copy(corpus / "videos" / "silent.mp4", f"{s3_bucket}/private/silent.mp4")
    s3_deny_reads(s3_bucket, "private/")
    rows = [
        f"{s3_bucket}/videos/cook.mp4,{s3_bucket}/videos/cook.vtt",
        f"{s3_bucket}/videos/plain.mp4,",
        f"{s3_bucket}/videos/gone.mp4,",
        f"{s3_bucket}/private/silent.mp4,",
    ]
    (tmp_path / "manifest.csv").write_text("video_path,caption_path\n" + "\n".join(rows) + "\n")
    out = tmp_path / "store"
    command = [sys.executable, "-m", "mcn", "extract", str(tmp_path / "manifest.csv"), "--out", str(out)]
    command += ["--preset", "tiny_cpu", "--word-vectors", str(corpus / "vectors.txt")]
    command += ["--num-cpus", "2", "--no-progress"]
    spool = tempfile.mkdtemp(prefix="mcnfetch", dir="/tmp")  # short: the local Ray's sockets go here too
    env = {**os.environ, "TMPDIR": spool}  # the s3_bucket fixture's AWS_* settings included
    env.pop("RAY_ADDRESS", None)
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        fetched_left = list(Path(spool).glob("mcn-fetch-*"))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    reader = store.StoreReader(out)
    assert sorted(reader.video_ids) == ["cook", "plain"]
    failures = {f["video_id"]: (f["stage"], f["reason"], f["source_path"]) for f in reader.failures()}
    assert failures == {
        "gone": ("fetch", "not_found", f"{s3_bucket}/videos/gone.mp4"),
        "silent": ("fetch", "denied", f"{s3_bucket}/private/silent.mp4"),
    }
    assert reader.read("cook").caption_text == ["cut the onion", "now stir the pot slowly"]
    local = {item.video_id: item for item in read_inputs(corpus / "videos")[0]}
    expected = extract_video(local["plain"].video_path, pipeline_config.tiny_cpu().extract)
    stored = reader.read("plain").feat_2d.astype(np.float32)
    np.testing.assert_allclose(stored, expected.feat_2d, rtol=1e-2, atol=1e-4)
    assert fetched_left == [], "every fetched copy was removed"
    assert verify_store(out) == []


def test_killed_driver_on_a_bucket_resumes_to_the_same_content(
    cluster, baseline, corpus, s3_bucket, tmp_path
):
    """Videos from a bucket prefix into a store in the bucket, on a cluster whose nodes have no AWS settings of
    their own (the driver's reach the workers); the driver is killed after its first shard, and the next run
    takes over the lock the dead driver left and completes the store without duplicates."""
    from mcn import storage

    videos, out = f"{s3_bucket}/corpus", f"{s3_bucket}/store"
    for path in sorted((corpus / "videos").iterdir()):
        storage.copy(path, f"{videos}/{path.name}")
    command = [sys.executable, "-m", "mcn", "extract", videos, "--out", out, "--preset", "tiny_cpu"]
    command += ["--word-vectors", str(corpus / "vectors.txt"), "--address", cluster.address]
    command += ["--max-videos-per-shard", "1", "--no-progress"]
    kill_after_the_first_shard(command, out)
    assert not storage.exists(f"{out}/{store.MANIFEST}")
    assert storage.exists(f"{out}/.lock"), "a killed driver leaves its lock behind"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "took over the lock" in resumed.stderr, resumed.stderr[-3000:]
    summary = json.loads(storage.read_bytes(f"{out}/summary.json"))
    assert summary["skipped_already_done"] >= 1
    assert_same_content(out, baseline)
    assert verify_store(out) == []
    assert not storage.exists(f"{out}/.lock")
    ids = [v for path in store.list_shards(out) for v in store.shard_video_ids(path)]
    assert sorted(ids) == sorted(GOOD), "every video is in exactly one shard"


def test_the_driver_passes_its_object_store_settings_only_for_a_job_on_urls(monkeypatch):
    from mcn.pipeline.inputs import VideoItem
    from mcn.pipeline.job import worker_env

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/this-machine.pem")  # a path: each node keeps its own
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = dataclasses.replace(pipeline_config.tiny_cpu(), input="/videos", out="/store")
    assert worker_env(local, [VideoItem("a", "/videos/a.mp4")]) == {}
    expected = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1"}
    assert worker_env(local, [VideoItem("a", "s3://bucket/a.mp4")]) == expected
    assert worker_env(dataclasses.replace(local, out="s3://bucket/store"), []) == expected
    # under `ray job submit --runtime-env-json`, what the job already sets is not set again
    monkeypatch.setenv(
        "RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"AWS_REGION": "x"}}})
    )
    assert worker_env(dataclasses.replace(local, out="s3://bucket/store"), []) == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9"
    }
