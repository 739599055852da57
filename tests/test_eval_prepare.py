"""`mcn eval prepare`: official files -> a definition with settings + the manifest handed to the extraction job."""

from __future__ import annotations

import csv
import json

import pytest

from mcn import cli
from mcn.errors import MCNError
from mcn.eval import benchmarks, config, prepare, protocols


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


def read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_writes_definition_and_manifest(tmp_path):
    annotations, videos = youcook2_fixture(tmp_path)
    made = config.PrepareConfig(
        benchmark="youcook2", annotations=(str(annotations),), videos=str(videos), out=str(tmp_path / "store")
    )
    prepared = prepare.run_prepare(made)
    assert (prepared.num_found, prepared.num_missing) == (1, 1)
    assert read_manifest(prepared.manifest) == [
        {"video_id": "yc_a", "video_path": str((videos / "yc_a.mp4").resolve())}
    ]
    assert prepared.definition == tmp_path / "store" / "benchmarks" / "youcook2.json"
    bench = benchmarks.load_benchmark(prepared.definition)
    assert [c.text for c in bench.clips] == ["add oil", "stir"]  # the missing video's clip is kept: it counts
    assert bench.settings == protocols.youcook2()
    saved = json.loads((tmp_path / "store" / "benchmarks" / "youcook2-prepare.json").read_text())
    assert saved["benchmark"] == "youcook2" and saved["split"] == "validation"


def test_prepare_cli_runs_the_extraction_over_the_manifest(tmp_path, monkeypatch, capsys):
    from mcn.pipeline import job

    annotations, videos = youcook2_fixture(tmp_path)
    calls = []
    summary = {"extracted": 1, "skipped_already_done": 0, "failed": 0}
    monkeypatch.setattr(job, "run_extraction", lambda extraction: calls.append(extraction) or summary)
    store = tmp_path / "store"
    argv = ["eval", "prepare", "youcook2", "--annotations", str(annotations), "--videos", str(videos),
            "--out", str(store), "--preset", "tiny_cpu", "--word-vectors", "w.bin", "--num-cpus", "1",
            "--audio-frames", "1000", "--set", "shards.max_videos=3"]  # fmt: skip
    assert cli.main(argv) == 0
    (extraction,) = calls
    assert extraction.input == str(store / "benchmarks" / "youcook2-inputs.csv")
    assert extraction.out == str(store) and extraction.extract.models.model_2d == "resnet152-tiny"
    assert extraction.extract.text.word_vectors == "w.bin" and extraction.ray.num_cpus == 1
    assert extraction.shards.max_videos == 3
    printed = capsys.readouterr().out
    assert "benchmark definition:" in printed and "1 videos found, 1 missing" in printed
    assert benchmarks.load_benchmark(store / "benchmarks" / "youcook2.json").settings.audio_frames == 1000

    calls.clear()
    assert cli.main([*argv, "--no-extract"]) == 0 and not calls


def test_reference_precision_preset_is_an_extraction_preset():
    from mcn.pipeline import config as pipeline_config

    runtime = pipeline_config.PRESETS["reference"]().extract.runtime
    assert (runtime.precision_2d, runtime.precision_3d) == ("fp32", "fp32")
    fast = pipeline_config.default().extract.runtime
    assert (fast.precision_2d, fast.precision_3d) == ("bf16", "tf32")


def test_generic_inputs_need_their_settings(tmp_path):
    clips = tmp_path / "clips.csv"
    benchmarks.write_retrieval_clips(clips, [benchmarks.RetrievalClip("a", 0.0, 4.0, "pour")])
    with pytest.raises(MCNError, match="--audio-frames"):
        prepare.generic(clips)
    bench = prepare.generic(clips, audio_frames=2000)
    assert bench.name == "clips" and bench.settings == protocols.generic_retrieval(2000)
    steps = tmp_path / "steps.json"
    steps.write_text(
        json.dumps({"videos": [{"video_id": "a", "steps": [{"text": "pour", "start": 0, "end": 1}]}]})
    )
    with pytest.raises(MCNError, match="--score-normalisation"):
        prepare.generic(steps)
    assert (
        prepare.generic(steps, score_normalisation="log_softmax").settings.score_normalisation
        == "log_softmax"
    )
    benchmarks.write_benchmark(tmp_path / "def.json", bench)
    assert prepare.generic(tmp_path / "def.json") == bench  # a definition passes through


def test_crosstask_video_list_through_prepare(tmp_path):
    (tmp_path / "tasks_primary.txt").write_text("16815\nMake Pancakes\nurl\n2\nadd flour,whisk mixture\n\n")
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for video in ("v1", "v2"):
        (annotations / f"16815_{video}.csv").write_text("1,2.5,6.1\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v2.mp4").write_bytes(b"x")
    (tmp_path / "videos_val.csv").write_text("16815,v2,https://www.youtube.com/watch?v=v2\n")
    made = config.PrepareConfig(
        benchmark="crosstask",
        annotations=(str(tmp_path / "tasks_primary.txt"), str(annotations)),
        videos=str(tmp_path / "videos"),
        out=str(tmp_path / "store"),
        video_list=str(tmp_path / "videos_val.csv"),
    )
    bench = benchmarks.load_benchmark(prepare.run_prepare(made).definition)
    assert [v.video_id for v in bench.videos] == ["v2"]
    assert (
        bench.settings.video_list.startswith("videos_val.csv")
        and bench.settings.primary_recall == "recall_task_macro"
    )


def test_prepare_errors(tmp_path):
    annotations, _ = youcook2_fixture(tmp_path)
    (tmp_path / "empty").mkdir()
    made = config.PrepareConfig(
        benchmark="youcook2",
        annotations=(str(annotations),),
        videos=str(tmp_path / "empty"),
        out=str(tmp_path / "s"),
    )
    with pytest.raises(MCNError, match="none of the 2 benchmark videos"):
        prepare.run_prepare(made)
    with pytest.raises(MCNError, match="does not exist"):
        prepare.find_videos(tmp_path / "nope", ["a"])
