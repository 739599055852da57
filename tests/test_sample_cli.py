"""`mcn sample-data`: writes a corpus with the chosen preset; bad arguments give one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mcn.cli import main


@pytest.mark.slow
def test_cli_writes_a_corpus_with_the_default_preset(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run([sys.executable, "-m", "mcn", "sample-data", str(out), "--videos", "6", "--seed", "1"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    truth = json.loads((out / "ground_truth.json").read_text())
    assert len(truth["videos"]) == 6 and "6 videos" in result.stdout
    durations = [v["duration"] for v in truth["videos"]]
    assert all(10.0 <= d <= 40.0 for d in durations)
    assert all(4.0 <= s["end"] - s["start"] <= 8.0 for v in truth["videos"] for s in v["steps"][:-1])
    # A second run into the same folder refuses politely; --overwrite is the way.
    assert main(["sample-data", str(out), "--videos", "6"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--videos", "0"], "--videos must be at least 4"),
        (["--seed", "-1"], "--seed must be"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_bad_arguments_give_one_line(tmp_path, capsys, args, message):
    assert main(["sample-data", str(tmp_path / "c"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
