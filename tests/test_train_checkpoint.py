"""Checkpoints: a step folder round-trips everything a run resumes from, ``latest`` switches atomically, and a
file that is not a safe load (an evil pickle) is refused in one line without running it."""

from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from train_store import store_fixture

from mcn.cli import main
from mcn.configs import config_to_dict
from mcn.errors import MCNError
from mcn.train import checkpoint as ckpt
from mcn.train import config as presets
from mcn.train.distributed import DistInfo
from mcn.train.trainer import build, restore, save_checkpoint, train_step

CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


store = store_fixture([6, 6])


def tiny_config(store):
    config = presets.tiny()
    return replace(config, data=replace(config.data, store=str(store)))


def trained_state(store, steps: int):
    _, state, _ = build(tiny_config(store), CPU)
    batches = iter(state.loader)
    for _ in range(steps):
        train_step(state, next(batches))
        state.step += 1
    return state


def assert_same_tree(a, b, path="") -> None:
    """Nested dicts / lists of tensors and numbers are equal, exactly."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_a_step_folder_round_trips_the_whole_training_state(store, tmp_path):
    state = trained_state(store, steps=2)  # of 3 per epoch: the resumed loader continues mid-epoch
    folder = save_checkpoint(state, tmp_path)
    assert folder.name == "step-000002"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "meta.json",
        "model.pt",
        "rng-rank-0.pt",
        "trainer.pt",
    ]
    assert ckpt.read_meta(folder) == {"format_version": ckpt.FORMAT_VERSION, "step": 2, "epoch": 0}

    fresh = build(tiny_config(store), CPU)[1]
    restore(fresh, folder)
    assert fresh.step == 2
    assert_same_tree(fresh.model.state_dict(), state.model.state_dict(), "model")
    assert_same_tree(fresh.optimizer.state_dict(), state.optimizer.state_dict(), "optimizer")
    assert_same_tree(fresh.scheduler.state_dict(), state.scheduler.state_dict(), "scheduler")
    assert fresh.scheduler.get_last_lr() == state.scheduler.get_last_lr()
    assert_same_tree(fresh.kmeans.state_dict(), state.kmeans.state_dict(), "kmeans")
    assert fresh.kmeans.queue is not None and fresh.kmeans.centroids is not None
    assert fresh.loader.state_dict() == state.loader.state_dict()
    # the next step of both is the same: the loader resumes right after the saved step's batch
    next_a, next_b = next(iter(state.loader)), next(iter(fresh.loader))
    assert torch.equal(next_a["video_index"], next_b["video_index"])


def test_random_states_round_trip_through_a_safe_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.write_rank_state(tmp_path, rank=3)
    expected = (random.random(), np.random.rand(), np.random.normal(), torch.rand(1))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    ckpt.set_rng_state(torch.load(tmp_path / "rng-rank-3.pt", weights_only=True))
    assert (random.random(), np.random.rand(), np.random.normal(), torch.rand(1)) == expected


def stage(run: Path, step: int) -> Path:
    """A complete staged step folder, as the trainer writes it before publishing."""
    folder = ckpt.staging_dir(run, step)
    folder.mkdir(parents=True)
    ckpt.write_main_state(folder, {"w": torch.ones(1) * step}, {"step": step}, {}, step, 0)
    return folder


def test_publish_switches_latest_and_keeps_the_newest(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2, 3):
        stage(run, step)
        final = ckpt.publish(run, step, keep_last=2)
        assert final == run / "checkpoints" / ckpt.step_name(step) and final.is_dir()
        assert ckpt.latest_checkpoint(run) == final
        assert not ckpt.staging_dir(run, step).exists()
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000003"]
    assert (root / "latest").read_text() == "step-000003\n"


def test_latest_is_never_half_written(tmp_path, monkeypatch):
    run = tmp_path / "run"
    stage(run, 1)
    ckpt.publish(run, 1, keep_last=3)
    stage(run, 2)  # a crash here (folder staged, not published) leaves latest at step 1
    assert ckpt.latest_checkpoint(run).name == "step-000001"

    real_replace = os.replace

    def crash_on_the_pointer(source, target):
        if Path(target).name == ckpt.LATEST:
            raise OSError("killed while switching latest")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_the_pointer)
    with pytest.raises(OSError, match="killed"):
        ckpt.publish(run, 2, keep_last=3)
    # the pointer is switched by one rename: it still names the complete previous folder
    assert (run / "checkpoints" / "latest").read_text() == "step-000001\n"
    assert ckpt.latest_checkpoint(run).name == "step-000001"


def test_latest_pointing_at_an_incomplete_folder_is_no_checkpoint(tmp_path):
    run = tmp_path / "run"
    stage(run, 1)
    ckpt.publish(run, 1, keep_last=3)
    (run / "checkpoints" / "step-000001" / "meta.json").unlink()
    assert ckpt.latest_checkpoint(run) is None
    assert ckpt.latest_checkpoint(tmp_path / "elsewhere") is None


def test_resolve_checkpoint_accepts_step_run_and_checkpoints_folders(tmp_path):
    run = tmp_path / "run"
    stage(run, 4)
    step = ckpt.publish(run, 4, keep_last=1)
    for given in (step, run, run / "checkpoints"):
        assert ckpt.resolve_checkpoint(given) == step
    with pytest.raises(MCNError, match="does not exist"):
        ckpt.resolve_checkpoint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MCNError, match="holds no checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "empty")


def test_damaged_metadata_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    stage(run, 1)
    folder = ckpt.publish(run, 1, keep_last=1)
    (folder / "meta.json").write_text(json.dumps({"format_version": 99, "step": 1}))
    with pytest.raises(MCNError, match="format 99"):
        ckpt.read_meta(folder)
    (folder / "meta.json").write_text('{"format_version": 1, "st')
    with pytest.raises(MCNError, match="not valid JSON"):
        ckpt.read_meta(folder)


def test_model_only_folder_loads_and_converts(store, tmp_path):
    state = trained_state(store, steps=1)
    folder = ckpt.save_model_only(
        state.model, tmp_path / "only", {"model": config_to_dict(state.model.config)}
    )
    model, config = ckpt.load_model(folder)
    assert config == state.model.config and not model.training
    assert_same_tree(model.state_dict(), state.model.state_dict())
    assert ckpt.convert_checkpoint(folder, tmp_path / "ref.pth") == "reference"
    assert ckpt.convert_checkpoint(tmp_path / "ref.pth", tmp_path / "back") == "mcn"
    assert_same_tree(ckpt.load_model(tmp_path / "back")[0].state_dict(), state.model.state_dict())
    with pytest.raises(MCNError, match="--to"):
        ckpt.convert_checkpoint(folder, tmp_path / "x", to="onnx")
    torch.save({"w": torch.zeros(1)}, folder / "model.pt")  # weights of another model
    with pytest.raises(MCNError, match="does not hold the weights"):
        ckpt.load_model(folder)


class _RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _assert_refused_in_one_line(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "not a safe load" in message and str(path) in message, message
    assert "\n" not in message and "weights_only" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.parametrize("name", ["model.pt", "trainer.pt", "rng-rank-0.pt"])
def test_an_evil_pickle_in_a_step_folder_is_refused_without_running(store, tmp_path, name):
    run = tmp_path / "run"
    state = trained_state(store, steps=1)
    folder = save_checkpoint(state, run)
    marker = tmp_path / "code-ran"
    evil = folder / name
    evil.write_bytes(pickle.dumps({"w": _RunsCode(str(marker))}))
    with pytest.raises(MCNError) as error:
        ckpt.load_training_state(folder, rank=0)
    _assert_refused_in_one_line(error, evil)
    if name == "model.pt":
        with pytest.raises(MCNError) as error:
            ckpt.load_model(run)
        _assert_refused_in_one_line(error, evil)
    assert not marker.exists()


def test_the_cli_refuses_an_evil_step_folder_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MCN_DEBUG", raising=False)
    run = tmp_path / "run"
    stage(run, 1)
    folder = ckpt.publish(run, 1, keep_last=1)
    (folder / "config.json").write_text(json.dumps({"model": config_to_dict(presets.tiny().model)}))
    marker = tmp_path / "code-ran"
    torch.save({"w": _RunsCode(str(marker))}, folder / "model.pt")
    assert main(["train", "convert-checkpoint", str(run), str(tmp_path / "out.pth")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a safe load" in lines[0] and "weights_only" not in lines[0], lines
    assert not marker.exists()


def test_a_truncated_step_file_is_a_one_line_error(store, tmp_path):
    folder = save_checkpoint(trained_state(store, steps=1), tmp_path / "run")
    data = (folder / "trainer.pt").read_bytes()
    (folder / "trainer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MCNError, match="cannot read .*trainer.pt: truncated"):
        ckpt.load_training_state(folder, rank=0)
