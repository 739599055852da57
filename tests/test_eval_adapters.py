"""Adapters on fixtures written in the official formats: clips, tasks and the settings they carry."""

from __future__ import annotations

import csv
import json

import pytest

from mcn.errors import MCNError
from mcn.eval import adapters, benchmarks, protocols


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
    bench = adapters.youcook2(path)
    assert bench.name == "youcook2" and bench.settings == protocols.youcook2()
    assert [(c.video_id, c.start, c.end, c.text) for c in bench.clips] == [
        ("vidA", 10.0, 20.0, "crack the eggs"),
        ("vidA", 25.0, 41.0, "whisk them"),
        ("vidC", 0.0, 5.0, "pour"),
    ]
    assert len(adapters.youcook2(path, split="training").clips) == 1
    with pytest.raises(MCNError, match="no clip"):
        adapters.youcook2(path, split="testing")


def test_msrvtt_jsfusion_csv(tmp_path):
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text(
        "key,vid_key,video_id,sentence\nret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog\n"
        "ret1,msr7725,video7725,young people sit around the edges of a room clapping\n"
    )
    bench = adapters.msrvtt(path)
    assert [(c.video_id, c.start, c.end) for c in bench.clips] == [
        ("video7579", None, None),
        ("video7725", None, None),
    ]
    assert bench.clips[1].text.startswith("young people")
    assert benchmarks.whole_video_span(None, None, 14.5) == (0.0, 14.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(MCNError, match="JSFusion"):
        adapters.msrvtt(bad)


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
    tasks = adapters.read_crosstask_tasks(tasks_path)
    assert tasks["16815"]["steps"] == ["add flour", "whisk mixture", "pour mixture into pan"]
    bench = adapters.crosstask(tasks_path, annotations)
    assert bench.settings.score_normalisation == "none"
    by_id = {v.video_id: v for v in bench.videos}
    assert set(by_id) == {"abc-DEF_123", "xyz"}  # the id keeps its own underscores
    video = by_id["abc-DEF_123"]
    assert video.task == "16815" and video.steps[2] == "pour mixture into pan"
    assert video.intervals == [[(2.5, 6.1), (20.0, 21.0)], [], [(10.0, 14.0)]]
    assert by_id["xyz"].intervals == [[], [(1.0, 3.0)]]
    assert bench.settings == protocols.crosstask("every primary-task annotation (2 videos)")


def test_crosstask_rejects_a_broken_task_file(tmp_path):
    path = tmp_path / "tasks_primary.txt"
    path.write_text("1\nTask\nurl\n3\nonly,two\n\n")
    with pytest.raises(MCNError, match="announces 3 steps"):
        adapters.read_crosstask_tasks(path)


def test_mining_youtube_segments(tmp_path):
    folder = tmp_path / "eggroll"
    folder.mkdir()
    (folder / "eggroll_0001.txt").write_text(
        "1-30 SIL\n31-90 crack_egg\n91-150 whisk_egg\n151-170 SIL\n171-200 crack_egg\n"
    )
    (tmp_path / "pancake_0002.txt").write_text("0 4.5 pour_milk\n4.5 9 SIL\n")
    bench = adapters.mining_youtube(tmp_path, frame_rate=15.0)
    assert bench.settings.score_normalisation == "log_softmax"
    assert bench.settings.primary_recall == "recall_video_macro"
    by_id = {v.video_id: v for v in bench.videos}
    egg = by_id["eggroll_0001"]
    assert egg.task == "eggroll" and egg.steps == ["crack egg", "whisk egg"]
    assert egg.intervals[0] == [(30 / 15, 90 / 15), (170 / 15, 200 / 15)]
    seconds = adapters.mining_youtube(tmp_path)  # times read as seconds
    assert {v.video_id: v for v in seconds.videos}["pancake_0002"].intervals == [[(0.0, 4.5)]]
    (tmp_path / "broken.txt").write_text("what is this\n")
    with pytest.raises(MCNError, match="line 1"):
        adapters.mining_youtube(tmp_path)


def write_jsfusion(path, num_rows=1000):
    """The JSFusion 1k-A test CSV as it ships: key retN, vid_key msrN, video_id videoN, one sentence each."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i in range(num_rows):
            number = 7010 + i
            writer.writerow([f"ret{i}", f"msr{number}", f"video{number}", f"a man, number {i}, is cooking"])
    return path


def test_msrvtt_on_a_full_size_jsfusion_csv(tmp_path):
    bench = adapters.msrvtt(write_jsfusion(tmp_path / "MSRVTT_JSFUSION_test.csv"))
    assert len(bench.clips) == 1000 and bench.name == "msrvtt"
    assert bench.clips[0] == benchmarks.RetrievalClip("video7010", None, None, "a man, number 0, is cooking")
    assert bench.clips[-1].video_id == "video8009"
    assert bench.settings == protocols.msrvtt()
    assert "1000 clips" in bench.source
    benchmarks.write_benchmark(tmp_path / "msrvtt.json", bench)
    assert benchmarks.load_benchmark(tmp_path / "msrvtt.json") == bench
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a\nret1,msr1,video1,b\n")
    with pytest.raises(MCNError, match="appears twice"):
        adapters.msrvtt(duplicated)


def test_crosstask_video_list_formats(tmp_path):
    tasks_path, annotations = write_crosstask(tmp_path)
    release = tmp_path / "videos_val.csv"  # the release's format: task,video,url without a header
    release.write_text("23521,xyz,https://www.youtube.com/watch?v=xyz\n99999,other,https://x\n")
    bench = adapters.crosstask(tasks_path, annotations, release)
    assert [v.video_id for v in bench.videos] == ["xyz"]
    assert bench.settings.video_list.startswith("videos_val.csv: 1 of its 1 primary-task pairs")
    with_header = tmp_path / "test_list.csv"  # task and video_id columns, as the list of the public numbers
    with_header.write_text("task,video_id,path\n16815,abc-DEF_123,16815/abc.mp4\n")
    assert [v.video_id for v in adapters.crosstask(tasks_path, annotations, with_header).videos] == [
        "abc-DEF_123"
    ]
    assert (
        adapters.crosstask(tasks_path, annotations).settings.video_list
        == "every primary-task annotation (2 videos)"
    )
    empty = tmp_path / "none.csv"
    empty.write_text("16815,not-annotated,url\n")
    with pytest.raises(MCNError, match="among the pairs"):
        adapters.crosstask(tasks_path, annotations, empty)
