"""`mcn demo`: its config and flags (fast), and the real command end to end in a subprocess (slow)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcn import demo
from mcn.errors import MCNError
from mcn.train import config as train_config


def parse(*argv: str) -> demo.DemoConfig:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo.build_config(parser.parse_args(list(argv)))


def test_the_default_is_the_tiny_twins_on_a_corpus_with_at_least_60_held_out_clips():
    config = parse()
    models = config.extraction.extract.models
    assert (models.model_2d, models.model_3d) == ("resnet152-tiny", "resnext101-tiny")
    assert config.corpus.backgrounds == ("plain",)
    # tiny sample videos have 2-3 steps, each one held-out clip
    assert 2 * config.corpus.num_heldout() >= 60
    assert config.device == config.train.device == config.eval.runtime.device == "auto"
    assert parse("--preset", "full_size").extraction.extract.models.model_2d == "resnet152"


def test_flags_and_set_reach_each_stage():
    config = parse(
        "--out", "o", "--num-videos", "40", "--seed", "3", "--num-cpus", "1", "--device", "cpu",
        "--max-steps", "7", "--set", "train.optim.lr=0.002", "--set", "corpus.num_glove_words=10",
    )  # fmt: skip
    assert (config.out, config.corpus.num_videos, config.corpus.seed) == ("o", 40, 3)
    assert config.extraction.ray.num_cpus == 1 and config.train.schedule.max_steps == 7
    assert config.train.optim.lr == 0.002 and config.corpus.num_glove_words == 10
    assert (
        config.extraction.extract.runtime.device == config.train.device == config.eval.runtime.device == "cpu"
    )


def test_old_flag_spellings_still_work(caplog):
    config = parse("--videos", "20", "--train-steps", "4", "--cpus", "1")
    assert (config.corpus.num_videos, config.train.schedule.max_steps, config.extraction.ray.num_cpus) == (
        20,
        4,
        1,
    )
    assert "--videos is deprecated" in caplog.text


def test_the_training_batch_fits_the_corpus():
    preset = train_config.sample_tiny()  # 16 videos x 4 clips, 16 clusters
    assert demo.sized_to_corpus(preset, 100) == preset
    small = demo.sized_to_corpus(preset, 3)
    assert small.data.batch_videos == 3 and small.kmeans.num_clusters == 12
    # a config the training job accepts: no more clusters than clips in a batch
    assert small.kmeans.num_clusters <= small.data.batch_videos * small.data.num_clips


@pytest.mark.parametrize("num_videos", [5, 8, 12, 20, 40])
def test_every_accepted_corpus_size_gets_a_batch_it_can_fill(num_videos):
    config = parse("--num-videos", str(num_videos))
    usable = config.corpus.num_clean_train()
    assert 1 <= config.train.data.batch_videos <= usable
    assert config.train.kmeans.num_clusters <= config.train.data.batch_videos * config.train.data.num_clips


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-videos", "3"], "--num-videos must be at least 4"),
        (["--num-videos", "4"], "--num-videos 5 or more"),
        (["--device", "gpu"], "--device must be"),
        (["--weights-2d", "missing.pth"], "no such file"),
        (["--set", "train.optim.lr=0"], "optim.lr"),
    ],
)
def test_bad_settings_are_refused_when_parsed(argv, message):
    with pytest.raises(MCNError, match=re.escape(message)):
        parse(*argv)


def test_weights_need_the_full_size_networks(tmp_path):
    weights = tmp_path / "r152.pth"
    weights.write_bytes(b"")
    with pytest.raises(MCNError, match="--preset full_size"):
        parse("--weights-2d", str(weights))
    assert parse("--preset", "full_size", "--weights-2d", str(weights)).extraction.extract.models.weights_2d


HELD_OUT = re.compile(
    r"held-out text->video: +R@1 [\d.]+% \(chance [\d.]+%\), R@5 .* MedR [\d.]+ \(chance [\d.]+\) of (\d+) clips"
)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_runs_end_to_end_and_exits_cleanly(tmp_path):
    out = tmp_path / "demo"
    # the smallest corpus the demo accepts: 1 clean training video (the batch is sized down to it), 1 held out
    argv = ["--out", str(out), "--num-videos", "5", "--max-steps", "4", "--device", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "mcn", "demo", *argv], capture_output=True, text=True, timeout=1700
    )
    output = result.stdout + result.stderr
    # It used to print every result and then die with SIGSEGV (returncode -11) at interpreter exit.
    assert result.returncode == 0, output[-4000:]
    assert "mcn demo finished" in result.stdout
    (gallery,) = HELD_OUT.search(result.stdout).groups()
    assert int(gallery) >= 1
    report = out / "eval" / "retrieval" / "report.html"
    assert f"HTML report: {report}" in result.stdout and report.stat().st_size > 0
    assert "videos for " in result.stdout  # the closing `mcn search`
    for folder in ("retrieval", "localization", "retrieval-seen"):
        assert json.loads((out / "eval" / folder / "metrics.json").read_text())
    assert json.loads((out / "demo_config.json").read_text())["train"]["data"]["batch_videos"] == 1
    # Both extraction jobs share one local Ray: after a ray.shutdown(), a second local Ray in the same process
    # leaves a metrics-exporter thread running to the end of the process (Ray 2.60), the state the crash came from.
    assert output.count("Started a local Ray instance") == 1, output[-4000:]


def test_make_demo_runs_the_command_tested_here():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1)
    assert recipe == "$(BIN)/mcn demo"  # no flags: the defaults are the demo
