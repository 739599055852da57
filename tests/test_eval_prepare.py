"""`mcn eval prepare`: official files -> generic definition + the list of videos handed to the extraction job."""

from __future__ import annotations

import csv
import json

import pytest

from mcn import cli
from mcn.errors import MCNError
from mcn.eval import benchmarks, prepare


def youcook2_fixture(root):
    database = {
        "yc_a": {
            "subset": "validation",
            "annotations": [{"segment": [1, 3], "id": 0, "sentence": "add oil"}],
        },
        "yc_b": {"subset": "validation", "annotations": [{"segment": [0, 2], "id": 0, "sentence": "stir"}]},
        "yc_c": {"subset": "training", "annotations": [{"segment": [0, 2], "id": 0, "sentence": "cut"}]},
    }
    (root / "yc.json").write_text(json.dumps({"database": database}))
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "yc_a.mp4").write_bytes(b"x")
    (videos / "sub" / "yc_c.webm").write_bytes(b"x")  # a training video: not listed
    (videos / "notes.txt").write_text("not a video")
    return root / "yc.json", videos


def test_prepare_writes_definition_and_inputs(tmp_path, monkeypatch, capsys):
    annotations, videos = youcook2_fixture(tmp_path)
    calls = []
    monkeypatch.setattr(prepare, "run_extraction", lambda inputs, config: calls.append((inputs, config)))
    argv = [
        "eval",
        "prepare",
        "youcook2",
        "--annotations",
        str(annotations),
        "--videos",
        str(videos),
        "--out",
        str(tmp_path / "store"),
        "--preset",
        "tiny_cpu",
    ]
    assert cli.main(argv) == 0
    assert "1 videos found, 1 missing" in capsys.readouterr().out
    ((inputs, config),) = calls
    with open(inputs, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"video_id": "yc_a", "video_path": str((videos / "yc_a.mp4").resolve())}]
    assert config.pipeline_preset == "tiny_cpu" and config.split == "validation"
    definition = tmp_path / "store" / "benchmarks" / "youcook2.csv"
    assert [c.text for c in benchmarks.load_benchmark(definition).clips] == ["add oil", "stir"]
    assert (
        json.loads((tmp_path / "store" / "benchmarks" / "youcook2-prepare.json").read_text())["benchmark"]
        == "youcook2"
    )


def test_prepare_errors(tmp_path):
    annotations, _ = youcook2_fixture(tmp_path)
    (tmp_path / "empty").mkdir()
    config = prepare.PrepareConfig(
        "youcook2", [str(annotations)], str(tmp_path / "empty"), str(tmp_path / "s")
    )
    with pytest.raises(MCNError, match="none of the 2 benchmark videos"):
        prepare.run_prepare(config)
    with pytest.raises(ValueError, match="unknown benchmark"):
        prepare.PrepareConfig("kinetics", ["a"], "v", "o")
    with pytest.raises(ValueError, match="crosstask takes 2-3"):
        prepare.PrepareConfig("crosstask", ["tasks_primary.txt"], "v", "o")
    with pytest.raises(MCNError, match="does not exist"):
        prepare.find_videos(tmp_path / "nope", ["a"])
