"""``mcn train``'s command line: preset -> flags -> --set, the shared flag names (old spellings warn), resume
from the saved config, one-line errors, and the real command in a subprocess."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from train_store import store_fixture, train_env

from mcn import store as store_module
from mcn.cli import build_subcommand_parser, main
from mcn.configs import save_config
from mcn.errors import MCNError
from mcn.train import checkpoint as ckpt
from mcn.train import config as presets
from mcn.train import model as model_presets
from mcn.train.cli import build_config
from mcn.train.trainer import train

store = store_fixture([6, 6])


def parse(*argv: str):
    parser, _ = build_subcommand_parser("train")
    return parser.parse_args(list(argv))


def config_of(*argv: str):
    return build_config(parse(*argv))


def test_flags_then_set_are_applied_to_the_preset(store, tmp_path):
    config = config_of(
        *("--store", str(store), "--out", str(tmp_path / "run"), "--preset", "tiny"),
        *("--lr", "0.5", "--num-clips", "3", "--batch-videos", "2", "--num-loader-workers", "1"),
        *("--max-steps", "9", "--precision", "bf16", "--compile", "--no-progress", "--device", "cuda:1"),
        *("--set", "optim.lr=0.25", "--set", "kmeans.fit_every=3"),
    )
    tiny = presets.tiny()
    assert config.data == replace(
        tiny.data, store=str(store.resolve()), num_clips=3, batch_videos=2, num_workers=1
    )
    assert config.optim.lr == 0.25  # --set comes after the flags
    assert config.schedule.max_steps == 9 and config.kmeans.fit_every == 3
    assert config.precision.dtype == "bf16" and config.precision.compile
    assert config.logging.progress is False and config.device == "cuda:1"
    assert config.model == tiny.model  # untouched sections stay the preset's


def test_unset_flags_keep_the_preset(store, tmp_path):
    config = config_of("--store", str(store), "--out", str(tmp_path), "--preset", "demo_cpu")
    assert config == replace(
        presets.demo_cpu(), data=replace(presets.demo_cpu().data, store=str(store.resolve()))
    )


def test_model_preset_then_set_on_the_model(store, tmp_path):
    config = config_of(
        *("--store", str(store), "--out", str(tmp_path), "--model", "tiny", "--set", "model.embed_dim=32")
    )
    assert config.model == replace(model_presets.tiny(), embed_dim=32)
    assert config.optim == presets.reference().optim


def test_old_spellings_still_work_and_warn(store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config = config_of(
            *("--store", str(store), "--out", str(tmp_path), "--preset", "tiny"),
            *("--clips-per-video", "3", "--loader-workers", "2", "--train-steps", "5"),
        )
    assert (config.data.num_clips, config.data.num_workers, config.schedule.max_steps) == (3, 2, 5)
    for old, new in [("--clips-per-video", "--num-clips"), ("--loader-workers", "--num-loader-workers")]:
        assert f"{old} is deprecated" in caplog.text and new in caplog.text
    parser, _ = build_subcommand_parser("train")
    assert "--clips-per-video" not in parser.format_help() and "--num-clips" in parser.format_help()


def test_resume_starts_from_the_saved_config_then_applies_the_flags(store, tmp_path, caplog):
    run = tmp_path / "run"
    saved = replace(presets.tiny(), data=replace(presets.tiny().data, store=str(store)), seed=7)
    saved = replace(saved, optim=replace(saved.optim, lr=0.123))
    save_config(saved, run / "config.json")
    with caplog.at_level(logging.INFO):
        config = config_of("--out", str(run), "--resume", "--preset", "reference", "--max-steps", "7")
    assert config == replace(saved, schedule=replace(saved.schedule, max_steps=7))
    assert "config saved in" in caplog.text
    # without --resume the saved config is not read
    assert config_of("--out", str(run), "--store", str(store)).optim.lr == presets.reference().optim.lr
    (run / "config.json").write_text("{ torn")
    with pytest.raises(MCNError, match="not valid JSON"):
        config_of("--out", str(run), "--resume")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--device", "gpu"], "cuda:N"),
        (["--set", "nosuch.key=1"], "unknown config key"),
        (["--lr", "fast"], "optim.lr"),
        (["--batch-videos", "0"], "data.batch_videos"),
    ],
)
def test_bad_values_are_user_errors(store, tmp_path, args, needle):
    with pytest.raises(MCNError, match=needle):
        config_of("--store", str(store), "--out", str(tmp_path), "--preset", "tiny", *args)


def test_help_and_bad_arguments_are_one_line(store, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MCN_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # where a URL taken for a relative path would make folders
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "torchrun" in out and "convert-checkpoint" in out and "--set" in out
    run = str(tmp_path / "r")
    cases = [
        (["--store", str(tmp_path / "missing"), "--out", run], "missing': does not exist"),
        (["--out", run], "--store"),
        (["--store", str(store)], "--out"),
        (["--store", str(store), "--out", "s3://bucket/run"], "only --store may be a URL"),
        (["--store", str(store), "--out", run, "--batch-videos", "0"], "batch_videos"),
        (["--store", str(store), "--out", run, "--preset", "tiny", "--batch-videos", "64"], "batch of 64"),
        (["--store", str(store), "--out", run, "--preset", "tiny", "--num-workers", "2"], "add --ray"),
        (["--store", str(store), "--out", run, "--preset", "tiny", "--device", "cuda:x"], "cuda:N"),
        (["convert-checkpoint", str(tmp_path / "nothing"), str(tmp_path / "x.pth")], "does not exist"),
    ]
    for args, needle in cases:
        assert main(["train", *args]) == 2, args
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("mcn train: error:"), lines


def test_convert_checkpoint_both_ways(store, tmp_path, capsys):
    run = tmp_path / "run"
    config = presets.tiny()
    train(
        replace(
            config,
            data=replace(config.data, store=str(store)),
            schedule=replace(config.schedule, max_steps=1),
        ),
        run,
    )
    reference = tmp_path / "model.pth"
    assert main(["train", "convert-checkpoint", str(run), str(reference)]) == 0
    assert "reference state dict" in capsys.readouterr().out
    assert "GU_video.fc.weight" in torch.load(reference, weights_only=True)
    back = tmp_path / "imported"
    assert main(["train", "convert-checkpoint", str(reference), str(back)]) == 0
    assert "mcn step folder" in capsys.readouterr().out
    original, _ = ckpt.load_model(run)
    imported, _ = ckpt.load_model(back)
    for name, value in original.state_dict().items():
        assert torch.equal(imported.state_dict()[name], value), name


@pytest.mark.slow
def test_the_real_command_trains_and_resumes_in_a_subprocess(store, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "mcn",
        "train",
        "--store",
        str(store),
        "--out",
        str(run),
        "--preset",
        "tiny",
    ]
    first = subprocess.run(
        [*command, "--max-steps", "2", "--no-progress", "--clips-per-video", "4"],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained 2 steps" in first.stdout and "checkpoint " in first.stdout
    assert "--clips-per-video is deprecated" in first.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["store"] == str(store.resolve()) and saved["schedule"]["max_steps"] == 2
    assert saved["model"]["word_dim"] == 6  # resolved from the store's word vectors

    again = subprocess.run(
        [*command, "--resume", "--max-steps", "3"],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "trained 3 steps" in again.stdout
    assert ckpt.latest_checkpoint(run).name == "step-000003"


@pytest.mark.slow
def test_the_real_command_trains_from_a_store_in_a_bucket(store, s3_bucket, tmp_path):
    url = f"{s3_bucket}/stores/train"
    store_module.copy_store(store, url)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "mcn", "train", "--store", url, "--out", str(run), "--preset", "tiny"]
        + ["--max-steps", "2", "--no-progress"],
        env=train_env(),  # with the bucket's AWS_* variables
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 2 steps" in result.stdout
    assert json.loads((run / "config.json").read_text())["data"]["store"] == url


def test_a_missing_bucket_store_is_a_one_line_error(s3_bucket, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MCN_DEBUG", raising=False)
    assert main(["train", "--store", f"{s3_bucket}/nothing", "--out", str(tmp_path / "run")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing': does not exist" in lines[0], lines
