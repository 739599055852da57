"""Evaluation configs: presets are valid, flags and --set go through the shared vocabulary, errors are clear."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mcn.configs import config_from_dict, config_to_dict
from mcn.errors import MCNError
from mcn.eval import cli, config, search
from mcn.zero_shot import add_arguments


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("preset", sorted(config.PRESETS))
def test_presets_are_frozen_and_round_trip(preset):
    made = config.PRESETS[preset]()
    assert config_from_dict(config.EvalConfig, config_to_dict(made)) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "localization"
    with pytest.raises(TypeError):
        config.RuntimeConfig("cpu")  # keyword-only


def test_device_defaults_to_auto_everywhere():
    assert config.default().runtime.device == "auto"
    assert config.search_default().runtime.device == "auto"
    args = parse("retrieval", "--checkpoint", "c", "--benchmark", "b.json", "--store", "s", "--out", "o")
    assert cli.build_eval_config(args).runtime.device == "auto"


def test_flags_then_set_build_the_job_config():
    args = parse(
        "retrieval", "--checkpoint", "a", "b", "--benchmark", "yc.json", "--store", "s", "--out", "o",
        "--preset", "quick_cpu", "--batch-size", "7", "--chunk-size", "9", "--audio-frames", "320",
        "--num-total", "1000", "--no-thumbnails", "--allow-missing-words", "--logmel-padding", "floor",
        "--word-vectors", "w.bin", "--no-progress", "--set", "report.top_k_shown=3", "--set", "runtime.batch_size=8",
    )  # fmt: skip
    made = cli.build_eval_config(args)
    assert made.kind == "retrieval" and made.checkpoints == ("a", "b") and made.benchmarks == ("yc.json",)
    assert (made.store, made.out, made.runtime.device) == ("s", "o", "cpu")  # the preset's device
    assert (made.runtime.batch_size, made.runtime.chunk_size, made.runtime.progress) == (8, 9, False)
    assert made.overrides == config.OverrideConfig(audio_frames=320, num_total=1000)
    assert made.text == config.TextConfig(word_vectors="w.bin", allow_missing_words=True)
    assert (made.audio.logmel_padding, made.report.thumbnails, made.report.top_k_shown) == ("floor", False, 3)


def test_localization_has_no_num_total():
    with pytest.raises(SystemExit):
        parse(
            "localization",
            "--checkpoint",
            "c",
            "--benchmark",
            "b",
            "--store",
            "s",
            "--out",
            "o",
            "--num-total",
            "5",
        )


def test_validation_errors_say_how_to_fix():
    with pytest.raises(MCNError, match="kind"):
        config.EvalConfig(kind="captioning")
    with pytest.raises(MCNError, match="runtime.device"):
        config.RuntimeConfig(device="tpu")
    with pytest.raises(MCNError, match="batch_size"):
        config.RuntimeConfig(batch_size=0)
    with pytest.raises(MCNError, match="logmel_padding"):
        config.AudioConfig(logmel_padding="reflect")
    with pytest.raises(MCNError, match="audio_frames"):
        config.OverrideConfig(audio_frames=8)
    with pytest.raises(MCNError, match="--checkpoint"):
        config.default().check_paths()
    with pytest.raises(MCNError, match="runtime.batch_size"):
        args = parse(
            "retrieval",
            "--checkpoint",
            "c",
            "--benchmark",
            "b",
            "--store",
            "s",
            "--out",
            "o",
            "--batch-size",
            "x",
        )
        cli.build_eval_config(args)
    with pytest.raises(MCNError, match="-k"):
        config.SearchConfig(k=0)


def test_prepare_config_is_keyword_only_and_checked():
    with pytest.raises(TypeError):
        config.PrepareConfig("youcook2", ("a",), "v", "o")
    with pytest.raises(MCNError, match="unknown benchmark"):
        config.PrepareConfig(benchmark="kinetics", annotations=("a",), videos="v", out="o")
    with pytest.raises(MCNError, match="crosstask takes 2"):
        config.PrepareConfig(benchmark="crosstask", annotations=("t.txt",), videos="v", out="o")
    with pytest.raises(MCNError, match="CrossTask only"):
        config.PrepareConfig(
            benchmark="msrvtt", annotations=("t.csv",), videos="v", out="o", video_list="l.csv"
        )


def test_prepare_flags_reach_both_configs(caplog):
    args = parse(
        "prepare", "crosstask", "--annotations", "tasks_primary.txt", "annotations", "videos_val.csv",
        "--videos", "v", "--out", "store", "--preset", "reference", "--word-vectors", "w.bin", "--num-cpus", "3",
    )  # fmt: skip
    prepared = cli.prepare_config(args)
    assert (
        prepared.annotations == ("tasks_primary.txt", "annotations")
        and prepared.video_list == "videos_val.csv"
    )
    assert "deprecated" in caplog.text and "--video-list" in caplog.text
    assert args.preset == "reference" and args.no_extract is False


def test_search_config_from_flags():
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    args = parser.parse_args(
        ["store", "whisk", "the", "eggs", "--checkpoint", "c", "-k", "3", "--set", "windows.hop_s=2"]
    )
    made = search.build_config(args)
    assert (made.store, made.query, made.checkpoint, made.k, made.windows.hop_s) == (
        "store",
        "whisk the eggs",
        "c",
        3,
        2.0,
    )
    assert made.runtime.device == "auto"
