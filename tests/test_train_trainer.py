"""The trainer on a tiny synthetic store: loss goes down, checkpoints are complete, a killed run resumes exactly,
a resumed run keeps the settings its state depends on."""

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from train_store import store_fixture, train_env

from mcn.errors import MCNError
from mcn.train import checkpoint as ckpt
from mcn.train import config as presets
from mcn.train.trainer import train, warmup_cosine

MCN = [sys.executable, "-m", "mcn"]
store = store_fixture([6, 6])


def tiny_config(store, reports=False, **schedule):
    """The tiny recipe on ``store``; ``reports`` adds TensorBoard and the loss plot (slow to import)."""
    config = presets.tiny()
    return replace(
        config,
        data=replace(config.data, store=str(store)),
        schedule=replace(config.schedule, **schedule),
        logging=replace(config.logging, tensorboard=reports, plot=reports),
    )


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup_steps=10, total_steps=110)
    assert factor(0) == 0 and factor(5) == 0.5 and factor(10) == 1.0
    assert factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_complete_checkpoints(store, tmp_path):
    run = tmp_path / "run"
    summary = train(
        tiny_config(store, reports=True, epochs=4), run
    )  # 12 videos / 4 per batch = 3 steps per epoch
    assert summary["steps"] == 12
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    for name in ("loss", "contrastive_loss", "cluster_loss", "reconstruction_loss", "lr", "clips_per_s"):
        assert all(name in r for r in records), name
    assert records[-1]["loss"] < records[0]["loss"]
    assert sum(r["reconstruction_loss"] for r in records[-3:]) < sum(
        r["reconstruction_loss"] for r in records[:3]
    )

    root = run / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-000012"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000010", "step-000012"]  # keep_last=2
    folder = root / "step-000012"
    for name in ("model.pt", "trainer.pt", "rng-rank-0.pt"):
        torch.load(folder / name, weights_only=True)  # plain tensors and containers only
    trainer = torch.load(folder / "trainer.pt", weights_only=True)
    assert trainer["step"] == 12 and trainer["loader"]["epoch"] == 3
    assert trainer["kmeans"]["centroids"].shape == (4, 24) and "queue" in trainer["kmeans"]
    assert json.loads((run / "config.json").read_text())["model"]["word_dim"] == 6  # from the store's words
    assert (run / "loss_curves.png").stat().st_size > 0
    assert any((run / "tensorboard").iterdir())

    model, model_config = ckpt.load_model(run)
    assert not model.training and model_config.word_dim == 6
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_loader_workers_that_persist_across_epochs_do_not_change_the_run(store, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the loader workers
    weights = {}
    for num_workers in (0, 2):
        config = tiny_config(store, epochs=3)  # 3 steps per epoch
        config = replace(config, data=replace(config.data, num_workers=num_workers))
        run = tmp_path / f"workers-{num_workers}"
        assert train(config, run)["steps"] == 9
        weights[num_workers] = torch.load(run / "checkpoints" / "step-000009" / "model.pt", weights_only=True)
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[2][name], value, rtol=0, atol=0, msg=name)


def test_a_run_with_checkpoints_needs_resume(store, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(store, max_steps=2), run)
    with pytest.raises(MCNError, match="--resume"):
        train(tiny_config(store, max_steps=4), run)


def test_resume_continues_from_the_latest_checkpoint_and_says_so(store, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny_config(store, max_steps=2), run)
    with caplog.at_level(logging.INFO, logger="mcn.train.trainer"):
        summary = train(tiny_config(store, max_steps=3), run, resume=True)
    assert summary["steps"] == 3 and summary["checkpoint"].endswith("step-000003")
    assert "resumed from" in caplog.text and "step 2" in caplog.text
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]


@pytest.mark.parametrize(
    "section, changes, needle",
    [
        ("model", {"embed_dim": 32}, "model.embed_dim 24 -> 32"),
        ("kmeans", {"num_clusters": 3}, "kmeans.num_clusters 4 -> 3"),
        ("data", {"num_clips": 2}, "data.num_clips 4 -> 2"),
    ],
)
def test_resume_with_settings_the_state_depends_on_changed_is_refused(
    store, tmp_path, section, changes, needle
):
    run = tmp_path / "run"
    config = tiny_config(store, max_steps=2)
    train(config, run)
    changed = replace(config, **{section: replace(getattr(config, section), **changes)})
    changed = replace(changed, schedule=replace(changed.schedule, max_steps=4))
    with pytest.raises(MCNError, match="cannot resume") as error:
        train(changed, run, resume=True)
    assert needle in str(error.value)


def mcn_train(store, run, *extra):
    args = [*MCN, "train", "--store", str(store), "--out", str(run), "--preset", "tiny", "--epochs", "4"]
    return [*args, "--max-steps", "10", "--checkpoint-every", "2", "--keep-last", "5", *extra]


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(store, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(mcn_train(store, straight), env=train_env(), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        mcn_train(store, killed), env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not (latest.exists() and latest.read_text().strip() >= "step-000004"):
        assert process.poll() is None and time.monotonic() < deadline, (
            "the run ended before it could be killed"
        )
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = latest.read_text().strip()
    assert stopped_at < "step-000010", "the run finished before the kill"

    result = subprocess.run(
        mcn_train(store, killed, "--resume"), env=train_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout + result.stderr

    final_a = torch.load(straight / "checkpoints" / "step-000010" / "model.pt", weights_only=True)
    final_b = torch.load(killed / "checkpoints" / "step-000010" / "model.pt", weights_only=True)
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        torch.testing.assert_close(final_b[name], final_a[name], rtol=0, atol=0, msg=name)
    state_a = torch.load(straight / "checkpoints" / "step-000010" / "trainer.pt", weights_only=True)
    state_b = torch.load(killed / "checkpoints" / "step-000010" / "trainer.pt", weights_only=True)
    torch.testing.assert_close(state_b["kmeans"]["centroids"], state_a["kmeans"]["centroids"], rtol=0, atol=0)
    torch.testing.assert_close(state_b["kmeans"]["queue"], state_a["kmeans"]["queue"], rtol=0, atol=0)
    assert state_b["loader"] == state_a["loader"]
