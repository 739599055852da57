"""Benchmark adapters on small fixtures written in the official formats; generic formats round-trip."""

from __future__ import annotations

import json

import pytest

from mcn.errors import MCNError
from mcn.eval import benchmarks


def test_youcook2_validation_split(tmp_path):
    database = {
        "vidA": {
            "subset": "validation",
            "duration": 200.0,
            "recipe_type": "113",
            "url": "https://youtube.com/x",
            "annotations": [
                {"segment": [10, 20], "id": 0, "sentence": "crack the eggs"},
                {"segment": [25, 41], "id": 1, "sentence": "whisk them"},
            ],
        },
        "vidB": {
            "subset": "training",
            "duration": 100.0,
            "annotations": [{"segment": [1, 2], "id": 0, "sentence": "x"}],
        },
        "vidC": {
            "subset": "validation",
            "duration": 50.0,
            "annotations": [{"segment": [0, 5], "id": 0, "sentence": "pour"}],
        },
    }
    path = tmp_path / "youcookii_annotations_trainval.json"
    path.write_text(json.dumps({"database": database}))
    bench = benchmarks.youcook2(path)
    assert bench.name == "youcook2"
    assert [(c.video_id, c.start, c.end, c.text) for c in bench.clips] == [
        ("vidA", 10.0, 20.0, "crack the eggs"),
        ("vidA", 25.0, 41.0, "whisk them"),
        ("vidC", 0.0, 5.0, "pour"),
    ]
    assert len(benchmarks.youcook2(path, split="training").clips) == 1
    with pytest.raises(MCNError, match="no clip"):
        benchmarks.youcook2(path, split="testing")


def test_msrvtt_jsfusion_csv(tmp_path):
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text(
        "key,vid_key,video_id,sentence\nret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog\n"
        "ret1,msr7725,video7725,young people sit around the edges of a room clapping\n"
    )
    bench = benchmarks.msrvtt(path)
    assert [(c.video_id, c.start, c.end) for c in bench.clips] == [
        ("video7579", None, None),
        ("video7725", None, None),
    ]
    assert bench.clips[1].text.startswith("young people")
    assert benchmarks.whole_video_span(None, None, 14.5) == (0.0, 14.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(MCNError, match="JSFusion"):
        benchmarks.msrvtt(bad)


def write_crosstask(root):
    (root / "tasks_primary.txt").write_text(
        "16815\nMake Pancakes\nhttps://www.wikihow.com/Make-Pancakes\n3\nadd flour,whisk mixture,pour mixture into pan\n\n"
        "23521\nMake Jello Shots\nhttps://www.wikihow.com/Make-Jello-Shots\n2\npour water,stir mixture\n\n"
    )
    annotations = root / "annotations"
    annotations.mkdir()
    (annotations / "16815_abc-DEF_123.csv").write_text("1,2.5,6.1\n3,10.0,14.0\n1,20.0,21.0\n")
    (annotations / "23521_xyz.csv").write_text("2,1.0,3.0\n")
    (annotations / "99999_other.csv").write_text("1,1.0,3.0\n")  # a related task: not primary
    return root / "tasks_primary.txt", annotations


def test_crosstask_primary_tasks(tmp_path):
    tasks_path, annotations = write_crosstask(tmp_path)
    tasks = benchmarks.read_crosstask_tasks(tasks_path)
    assert tasks["16815"]["steps"] == ["add flour", "whisk mixture", "pour mixture into pan"]
    bench = benchmarks.crosstask(tasks_path, annotations)
    assert bench.score_normalisation == "none"
    by_id = {v.video_id: v for v in bench.videos}
    assert set(by_id) == {"abc-DEF_123", "xyz"}  # the id keeps its own underscores
    video = by_id["abc-DEF_123"]
    assert video.task == "16815" and video.steps[2] == "pour mixture into pan"
    assert video.intervals == [[(2.5, 6.1), (20.0, 21.0)], [], [(10.0, 14.0)]]
    assert by_id["xyz"].intervals == [[], [(1.0, 3.0)]]
    videos_csv = tmp_path / "videos_val.csv"
    videos_csv.write_text("23521,xyz,https://www.youtube.com/watch?v=xyz\n")
    assert [v.video_id for v in benchmarks.crosstask(tasks_path, annotations, videos_csv).videos] == ["xyz"]


def test_crosstask_rejects_a_broken_task_file(tmp_path):
    path = tmp_path / "tasks_primary.txt"
    path.write_text("1\nTask\nurl\n3\nonly,two\n\n")
    with pytest.raises(MCNError, match="announces 3 steps"):
        benchmarks.read_crosstask_tasks(path)


def test_mining_youtube_segments(tmp_path):
    folder = tmp_path / "eggroll"
    folder.mkdir()
    (folder / "eggroll_0001.txt").write_text(
        "1-30 SIL\n31-90 crack_egg\n91-150 whisk_egg\n151-170 SIL\n171-200 crack_egg\n"
    )
    (tmp_path / "pancake_0002.txt").write_text("0 4.5 pour_milk\n4.5 9 SIL\n")
    bench = benchmarks.mining_youtube(tmp_path, frame_rate=15.0)
    assert bench.score_normalisation == "log_softmax"
    by_id = {v.video_id: v for v in bench.videos}
    egg = by_id["eggroll_0001"]
    assert egg.task == "eggroll" and egg.steps == ["crack egg", "whisk egg"]
    assert egg.intervals[0] == [(30 / 15, 90 / 15), (170 / 15, 200 / 15)]
    seconds = benchmarks.mining_youtube(tmp_path)  # times read as seconds
    assert {v.video_id: v for v in seconds.videos}["pancake_0002"].intervals == [[(0.0, 4.5)]]
    (tmp_path / "broken.txt").write_text("what is this\n")
    with pytest.raises(MCNError, match="line 1"):
        benchmarks.mining_youtube(tmp_path)


def test_generic_formats_round_trip(tmp_path):
    retrieval = benchmarks.RetrievalBenchmark(
        "sample",
        [
            benchmarks.RetrievalClip("v1", 1.5, 9.0, "crack, the eggs"),
            benchmarks.RetrievalClip("v2", None, None, "whole"),
        ],
    )
    benchmarks.write_retrieval_csv(tmp_path / "sample.csv", retrieval)
    assert benchmarks.load_benchmark(tmp_path / "sample.csv") == retrieval
    tasks_path, annotations = write_crosstask(tmp_path)
    localization = benchmarks.crosstask(tasks_path, annotations)
    benchmarks.write_localization_json(tmp_path / "ct.json", localization)
    again = benchmarks.load_benchmark(tmp_path / "ct.json")
    assert again.videos == localization.videos and again.name == "crosstask"


def test_generic_errors_are_actionable(tmp_path):
    with pytest.raises(MCNError, match="does not exist"):
        benchmarks.load_benchmark(tmp_path / "missing.csv")
    (tmp_path / "b.csv").write_text("video_id,text\nv,hello\n")
    with pytest.raises(MCNError, match="columns"):
        benchmarks.load_benchmark(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("video_id,start,end,text\nv,abc,2,hello\n")
    with pytest.raises(MCNError, match="numbers of seconds"):
        benchmarks.load_benchmark(tmp_path / "c.csv")
    (tmp_path / "d.json").write_text('{"videos": [{"video_id": "v"}]}')
    with pytest.raises(MCNError, match="localisation benchmark"):
        benchmarks.load_benchmark(tmp_path / "d.json")


def test_sample_corpus_localization_format(tmp_path):
    path = tmp_path / "benchmark_localization.json"
    path.write_text(
        json.dumps(
            {
                "format_version": 1,
                "time_step": 1.0,
                "videos": [
                    {
                        "video_id": "h1",
                        "file": "heldout/h1.mp4",
                        "duration": 9.5,
                        "steps": [
                            {
                                "start": 0.0,
                                "end": 4.2,
                                "text": "now the red circle slides left",
                                "name": "red circle slide",
                            },
                            {
                                "start": 4.2,
                                "end": 9.5,
                                "text": "the blue square spins",
                                "name": "blue square spin",
                            },
                        ],
                    }
                ],
            }
        )
    )
    bench = benchmarks.load_benchmark(path)
    video = bench.videos[0]
    assert (video.task, video.duration) == ("all", 9.5)
    assert video.steps == ["now the red circle slides left", "the blue square spins"]
    assert video.intervals == [[(0.0, 4.2)], [(4.2, 9.5)]]
