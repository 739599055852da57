"""The cluster path for real, on one machine: a two-node Ray cluster runs the extraction job submitted with
`ray job submit`, then torchrun trains with two DDP processes (gloo) through docker/cluster/torchrun-multinode.sh.

Every Ray process the test starts carries its own --temp-dir in its command line; teardown stops exactly those
(a plain `ray stop` would also stop other Ray instances on the machine).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from media import make_video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORDS = ["the", "pan", "oil", "heat", "onion", "add", "salt", "stir", "knife", "cut", "tomato", "garlic"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def write_corpus(folder: Path, num_videos: int) -> Path:
    """Tiny narrated videos with WebVTT sidecar captions, and a word2vec text file covering their words."""
    folder.mkdir(parents=True)
    for index in range(num_videos):
        make_video(folder / f"video{index}.mp4", seconds=4.0, size=(96, 64), audio_hz=300 + 50 * index)
        cues = []
        for cue in range(3):
            words = " ".join(WORDS[(index + cue * 3 + k) % len(WORDS)] for k in range(4))
            cues.append(f"00:00:0{cue}.000 --> 00:00:0{cue + 1}.500\n{words}\n")
        (folder / f"video{index}.vtt").write_text("WEBVTT\n\n" + "\n".join(cues))
    vectors = folder.parent / "vectors.txt"
    lines = [f"{len(WORDS)} 6"]
    for i, word in enumerate(WORDS):
        lines.append(word + " " + " ".join(f"{math.sin(i * 7 + d):.4f}" for d in range(6)))
    vectors.write_text("\n".join(lines) + "\n")
    return vectors


def stop_ray_processes(temp_dir: str) -> None:
    """Terminate the Ray processes whose command line names this cluster's temp dir (and nothing else)."""
    names_it = re.compile(re.escape(temp_dir) + r"(/|\s|$)")
    mine = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if names_it.search(cmdline) and process.pid != os.getpid():
            mine.append(process)
    for process in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(mine, timeout=15)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def node_ports() -> list[str]:
    """Ports of one node's agents, each free: with Ray's fixed defaults (the dashboard agent's 52365, ...) the
    second node on one machine, or any other Ray running here, fails to bind them, and a job submitted to a
    node whose agent has no HTTP server is refused ("No available agent to submit job")."""
    names = (
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
    )
    return [f"--{name}={free_port()}" for name in names]


@pytest.fixture
def ray_cluster() -> Iterator[dict]:
    """A head and a second worker node on 127.0.0.1, one CPU each; yields the addresses and environment."""
    # A short path: Ray's Unix sockets live under the temp dir and must stay under ~100 characters.
    temp_dir = tempfile.mkdtemp(prefix="mcn-cluster-test-", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Explicit: with the mode unset, Ray turns token auth on for a head when ~/.ray/auth_token exists
        # (left by any earlier local ray.init()), and the second node then fails to join without the token.
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "MCN_DEBUG": "1",
    }
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(150 * 1024 * 1024)]
    try:
        # Ray gives a starting node a fixed 30 s to register; on a loaded 2-core machine that can pass, so
        # a failed start is retried from scratch (at most three times) instead of failing the test.
        for attempt in range(3):
            gcs_port, dashboard_port = free_port(), free_port()
            head = [
                str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
                "--temp-dir", temp_dir, "--disable-usage-stats", *common, *node_ports(),
            ]  # fmt: skip
            worker = [
                str(VENV_BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs_port}", "--node-ip-address", "127.0.0.1",
                "--temp-dir", temp_dir, *common, *node_ports(),
            ]  # fmt: skip
            started = [subprocess.run(head, env=env, capture_output=True, text=True, timeout=240)]
            if started[0].returncode == 0:
                started.append(subprocess.run(worker, env=env, capture_output=True, text=True, timeout=240))
            if all(result.returncode == 0 for result in started):
                break
            stop_ray_processes(temp_dir)
            assert attempt < 2, (
                f"ray start failed three times:\n{started[-1].stdout[-3000:]}\n{started[-1].stderr[-3000:]}"
            )
        yield {"dashboard": f"http://127.0.0.1:{dashboard_port}", "gcs": f"127.0.0.1:{gcs_port}", "env": env}
    finally:
        stop_ray_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_nodes(cluster: dict, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            [str(VENV_BIN / "ray"), "list", "nodes", "--address", cluster["dashboard"], "--format", "json"],
            env=cluster["env"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if listed.returncode == 0:
            alive = [n for n in json.loads(listed.stdout) if n.get("state") == "ALIVE"]
            if len(alive) >= count:
                return
        assert time.monotonic() < deadline, (
            f"the cluster never showed {count} nodes: {listed.stdout}{listed.stderr}"
        )
        time.sleep(2)


def store_info(store: Path, env: dict[str, str]) -> dict:
    return json.loads(
        run([str(VENV_BIN / "mcn"), "store", "info", str(store), "--json"], env, timeout=300).stdout
    )


def test_ray_job_extraction_then_torchrun_ddp_training(ray_cluster: dict, tmp_path: Path) -> None:
    env = ray_cluster["env"]
    corpus, store, run_dir = tmp_path / "corpus", tmp_path / "store", tmp_path / "run"
    num_videos = 4
    vectors = write_corpus(corpus, num_videos)
    wait_for_nodes(ray_cluster, 2)

    # The documented form: ray job submit --address http://HEAD:8265 -- mcn extract ... --address auto
    submit = [
        str(VENV_BIN / "ray"), "job", "submit", "--address", ray_cluster["dashboard"], "--",
        "mcn", "extract", str(corpus), "--out", str(store), "--preset", "tiny_cpu",
        "--word-vectors", str(vectors), "--address", "auto", "--no-progress",
    ]  # fmt: skip
    # The head's job agent can come up after the nodes show as alive; until then a submission is refused
    # (and no job is started), so a refusal is retried for a while.
    deadline = time.monotonic() + 180
    while True:
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        refused = "No available agent to submit job" in result.stdout + result.stderr
        if result.returncode == 0 or not refused or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, f"ray job submit failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "succeeded" in result.stdout.lower(), result.stdout[-3000:]

    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["shards"], manifest
    run([str(VENV_BIN / "mcn"), "store", "verify", str(store)], env, timeout=300)
    info = store_info(store, env)
    assert info["finished"] and info["videos"] == num_videos and info["failures"] == 0, info

    # Two DDP processes on CPU (gloo) through the multi-node script, as one node of one.
    script_env = {
        **env,
        "NNODES": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GPUS_PER_NODE": "2",
        "MAX_RESTARTS": "0",
    }
    train_args = ["--preset", "tiny", "--max-steps", "2", "--device", "cpu", "--no-progress"]
    run(
        ["bash", "docker/cluster/torchrun-multinode.sh", str(store), str(run_dir), *train_args],
        script_env,
        timeout=900,
    )

    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert checkpoints and all(path.is_dir() for path in checkpoints), list(run_dir.rglob("*"))
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    losses = [value for record in records for key, value in record.items() if key.endswith("loss")]
    assert losses and all(math.isfinite(value) for value in losses), records


def submit_job(cluster: dict, command: list[str], env_vars: dict[str, str], timeout: float = 900) -> str:
    """``ray job submit`` ``command`` with ``env_vars`` in the job's runtime env (as a user gives a cluster its
    object-store settings); a refusal before the head's job agent is up is retried. Returns the job's output."""
    submit = [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster["dashboard"]]
    submit += ["--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", *command]
    deadline = time.monotonic() + 180
    while True:
        result = subprocess.run(
            submit, env=cluster["env"], capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
        refused = "No available agent to submit job" in result.stdout + result.stderr
        if result.returncode == 0 or not refused or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    assert "succeeded" in result.stdout.lower(), result.stdout[-3000:]
    return result.stdout


def test_bucket_to_bucket_extraction_then_training_and_evaluation_from_the_bucket(
    ray_cluster, s3_bucket, tmp_path
):
    """The cluster's nodes share nothing but the S3 server: the videos, the store and the benchmark are in the
    bucket; the nodes were started without object-store settings, which the jobs carry in their runtime env.
    Extraction runs on both nodes; training and evaluation read the store from the bucket (as jobs on the head,
    whose run folder is its own)."""
    from mcn import storage, store
    from mcn.eval import benchmarks, protocols

    aws = {
        name: os.environ[name]
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    assert not any(name in ray_cluster["env"] for name in aws), (
        "the nodes start without object-store settings"
    )
    env = {**ray_cluster["env"], **aws}  # for this test's own commands
    num_videos = 4
    vectors = write_corpus(tmp_path / "corpus", num_videos)
    for path in sorted((tmp_path / "corpus").iterdir()):
        storage.copy(path, f"{s3_bucket}/raw/{path.name}")
    store_url = f"{s3_bucket}/features/store"
    wait_for_nodes(ray_cluster, 2)

    submit_job(ray_cluster, ["mcn", "extract", f"{s3_bucket}/raw", "--out", store_url, "--preset", "tiny_cpu",
                             "--word-vectors", str(vectors), "--address", "auto", "--no-progress"], aws)  # fmt: skip
    info = json.loads(
        run([str(VENV_BIN / "mcn"), "store", "info", store_url, "--json"], env, timeout=300).stdout
    )
    assert info["finished"] and info["videos"] == num_videos and info["failures"] == 0, info
    run([str(VENV_BIN / "mcn"), "store", "verify", store_url], env, timeout=300)
    assert [storage.name(p) for p in storage.list_files(store_url, ".lock")] == [], "the lock is released"
    tasks = subprocess.run(
        [str(VENV_BIN / "ray"), "list", "tasks", "--address", ray_cluster["dashboard"], "--format", "json",
         "--filter", "name=decode_video", "--limit", "1000"],
        env=ray_cluster["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tasks.returncode == 0, tasks.stderr[-2000:]
    nodes = {task["node_id"] for task in json.loads(tasks.stdout) if task.get("node_id")}
    assert len(nodes) == 2, f"the videos were decoded on {len(nodes)} node(s): {tasks.stdout[-2000:]}"

    run_dir = tmp_path / "run"
    submit_job(ray_cluster, ["mcn", "train", "--store", store_url, "--out", str(run_dir), "--preset", "tiny",
                             "--max-steps", "2", "--device", "cpu", "--no-progress"], aws)  # fmt: skip
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert checkpoints, list(run_dir.rglob("*"))

    reader = store.StoreReader(store_url)
    clips = [
        benchmarks.RetrievalClip(video_id, float(record.caption_start[0]), float(record.caption_end[0]), record.caption_text[0])
        for video_id in sorted(reader.video_ids)
        for record in [reader.read(video_id)]
    ]  # fmt: skip
    settings = protocols.RetrievalSettings(
        audio_frames=400, primary_task="text_to_video", reference=protocols.msrvtt().reference
    )
    local_definition = tmp_path / "clips.json"
    benchmarks.write_benchmark(local_definition, benchmarks.RetrievalBenchmark("clips", clips, settings))
    definition = f"{s3_bucket}/benchmarks/clips.json"
    storage.copy(local_definition, definition)
    out = tmp_path / "eval"
    submit_job(ray_cluster, ["mcn", "eval", "retrieval", "--checkpoint", str(checkpoints[-1]), "--benchmark", definition,
                             "--store", store_url, "--out", str(out), "--preset", "quick_cpu"], aws)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    step = checkpoints[-1].name
    assert metrics[f"{step}/clips/reference/text_to_video/num_queries"] == num_videos, metrics
    assert metrics[f"{step}/clips/reference/text_to_video/num_missing"] == 0, metrics
    recalls = [value for key, value in metrics.items() if key.endswith("/R@10")]
    assert recalls and all(0.0 <= value <= 1.0 for value in recalls), metrics
