"""``mcn train --ray``: the training loop under Ray Train's TorchTrainer on a local CPU Ray, and the real command on
a two-node cluster from a store in a bucket."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from test_cluster import ray_cluster, wait_for_nodes  # noqa: F401 (the two-node `ray start` cluster fixture)
from train_store import make_store, train_env

from mcn.errors import MCNError
from mcn.storage import STORE_ENV_VARS
from mcn.store import copy_store
from mcn.train import checkpoint as ckpt
from mcn.train import config as presets
from mcn.train.ray_train import train_with_ray, worker_env_vars


def test_no_workers_is_a_user_error_before_ray_starts(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("Ray must not start"))
    with pytest.raises(MCNError, match="--num-workers must be >= 1"):
        train_with_ray(presets.tiny(), tmp_path / "run", resume=False, num_workers=0)


def test_workers_get_the_endpoint_and_credentials_for_a_store_in_object_storage(monkeypatch):
    for name in STORE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/on-the-driver.pem")  # a path: each node keeps its own
    assert worker_env_vars("s3://bucket/store") == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    assert worker_env_vars("/data/store") == {}  # a local store needs no credentials


@pytest.mark.slow
def test_one_ray_train_worker_trains_and_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_store(tmp_path / "store", [4, 4], seconds=8)
    config = presets.tiny()
    config = replace(
        config,
        data=replace(config.data, store=str(tmp_path / "store")),
        schedule=replace(config.schedule, max_steps=2),
        device="auto",  # no GPU in the cluster: the workers train on the CPU
    )
    run = tmp_path / "run"
    summary = train_with_ray(config, run, resume=False, num_workers=1)
    assert summary["steps"] == 2 and summary["checkpoint"].endswith("step-000002")
    assert summary["loss"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    trainer = torch.load(ckpt.latest_checkpoint(run) / "trainer.pt", weights_only=True)
    assert trainer["step"] == 2 and trainer["loader"]["world_size"] == 1
    assert (tmp_path / ".ray").is_dir()  # Ray Train's own results sit next to the run folder


@pytest.mark.slow
def test_workers_on_two_nodes_train_from_a_store_in_a_bucket(ray_cluster, s3_bucket, tmp_path):  # noqa: F811
    # The nodes started without the test bucket's AWS_* variables (ray_cluster is set up before s3_bucket sets
    # them): the workers reach the bucket only with the driver's endpoint and keys, which `mcn train --ray`
    # hands them.
    assert ray_cluster["env"].get("AWS_ENDPOINT_URL") != os.environ["AWS_ENDPOINT_URL"]
    make_store(tmp_path / "store", [4, 4], seconds=8)
    url = f"{s3_bucket}/stores/train"
    copy_store(tmp_path / "store", url)
    wait_for_nodes(ray_cluster, 2)  # one CPU each: the two workers run on different nodes
    run = tmp_path / "run"
    ray_cluster_args = ["--ray", "--address", ray_cluster["gcs"], "--num-workers", "2"]
    mcn_train = [sys.executable, "-m", "mcn", "train", *ray_cluster_args]
    command = [*mcn_train, "--store", url, "--out", str(run), "--preset", "tiny", "--max-steps", "2"]
    command.append("--no-progress")
    result = subprocess.run(command, env=train_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 2 steps" in result.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    folder = ckpt.latest_checkpoint(run)
    assert folder.name == "step-000002" and (folder / "rng-rank-1.pt").exists()
    assert torch.load(folder / "trainer.pt", weights_only=True)["loader"]["world_size"] == 2
    assert json.loads((run / "config.json").read_text())["data"]["store"] == url
