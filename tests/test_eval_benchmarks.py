"""Benchmark definitions: they carry their protocol settings; a definition without them is refused."""

from __future__ import annotations

import json

import pytest

from mcn.errors import MCNError
from mcn.eval import benchmarks, protocols


def retrieval_definition() -> benchmarks.RetrievalBenchmark:
    clips = [
        benchmarks.RetrievalClip("v1", 1.5, 9.0, "crack, the eggs"),
        benchmarks.RetrievalClip("v2", None, None, "whole"),
    ]
    return benchmarks.RetrievalBenchmark("msrvtt", clips, protocols.msrvtt(), "test.csv")


def localization_definition() -> benchmarks.LocalizationBenchmark:
    videos = [benchmarks.LocalizationVideo("a", "t1", ["pour", "stir"], [[(1.0, 2.0)], []], 30.0)]
    return benchmarks.LocalizationBenchmark(
        "crosstask", videos, protocols.crosstask("videos_val.csv"), "x", {"k": 1}
    )


def test_definitions_round_trip_with_their_settings(tmp_path):
    for bench in (retrieval_definition(), localization_definition()):
        path = tmp_path / f"{bench.name}.json"
        benchmarks.write_benchmark(path, bench)
        assert benchmarks.load_benchmark(path) == bench
    data = json.loads((tmp_path / "msrvtt.json").read_text())
    assert data["format_version"] == benchmarks.FORMAT_VERSION and data["kind"] == "retrieval"
    assert data["settings"]["audio_frames"] == 3072
    assert data["settings"]["reference"] == {
        "gallery": "with_audio",
        "denominator": "annotated",
        "median": "rows",
    }
    assert data["settings"]["strict"] == {
        "gallery": "present",
        "denominator": "annotated",
        "median": "annotated",
    }


def test_a_definition_without_settings_is_refused(tmp_path):
    old = tmp_path / "crosstask.json"  # the localisation format before settings
    old.write_text(json.dumps({"name": "crosstask", "score_normalisation": "none", "videos": []}))
    with pytest.raises(MCNError, match="carries no protocol settings; rerun `mcn eval prepare`"):
        benchmarks.load_benchmark(old)
    clips = tmp_path / "youcook2.csv"
    benchmarks.write_retrieval_clips(clips, retrieval_definition().clips)
    with pytest.raises(MCNError, match="clip list without protocol settings"):
        benchmarks.load_benchmark(clips)


def test_an_old_file_that_carries_the_settings_is_read(tmp_path):
    path = tmp_path / "old.json"
    settings = {
        "audio_frames": 1024,
        "window_s": 8.0,
        "max_words": 30,
        "score_normalisation": "log_softmax",
        "primary_recall": "recall_video_macro",
        "video_list": "mine",
    }
    videos = [{"video_id": "a", "task": "t", "steps": [{"text": "pour", "intervals": [[0, 1]]}]}]
    path.write_text(
        json.dumps({"name": "old", "score_normalisation": "none", "settings": settings, "videos": videos})
    )
    bench = benchmarks.load_benchmark(path)
    assert bench.settings.score_normalisation == "log_softmax" and bench.videos[0].steps == ["pour"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("audio_frames"), "settings audio_frames missing"),
        (lambda s: s["reference"].pop("median"), "median"),
        (lambda s: s.update(frames=5), "unknown config keys"),
        (lambda s: s["reference"].update(gallery="all"), "gallery rule 'all' is unknown"),
        (lambda s: s["reference"].update(denominator=1000), "denominator rule 1000 is unknown"),
        (lambda s: s.update(primary_task="video_to_text"), "primary_task"),
        (lambda s: s.update(audio_frames=4), "audio_frames must be >= 16"),
    ],
)
def test_a_missing_or_unknown_setting_is_a_clear_error(tmp_path, change, message):
    path = tmp_path / "msrvtt.json"
    benchmarks.write_benchmark(path, retrieval_definition())
    data = json.loads(path.read_text())
    change(data["settings"])
    path.write_text(json.dumps(data))
    with pytest.raises(MCNError, match=message):
        benchmarks.load_benchmark(path)


def test_generic_errors_are_actionable(tmp_path):
    with pytest.raises(MCNError, match="does not exist"):
        benchmarks.load_benchmark(tmp_path / "missing.json")
    (tmp_path / "b.csv").write_text("video_id,text\nv,hello\n")
    with pytest.raises(MCNError, match="columns"):
        benchmarks.read_retrieval_clips(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("video_id,start,end,text\nv,abc,2,hello\n")
    with pytest.raises(MCNError, match="numbers of seconds"):
        benchmarks.read_retrieval_clips(tmp_path / "c.csv")
    (tmp_path / "d.json").write_text('{"videos": [{"video_id": "v"}]}')
    with pytest.raises(MCNError, match="localisation benchmark"):
        benchmarks.parse_localization_videos(json.loads((tmp_path / "d.json").read_text()), "d.json")
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(MCNError, match="not valid JSON"):
        benchmarks.load_benchmark(tmp_path / "e.json")
    (tmp_path / "f.json").write_text(json.dumps({"format_version": 99, "clips": []}))
    with pytest.raises(MCNError, match="newer"):
        benchmarks.load_benchmark(tmp_path / "f.json")


def test_sample_corpus_localization_format(tmp_path):
    data = {
        "format_version": 1,
        "time_step": 1.0,
        "videos": [
            {
                "video_id": "h1",
                "file": "heldout/h1.mp4",
                "duration": 9.5,
                "steps": [
                    {"start": 0.0, "end": 4.2, "text": "now the red circle slides left", "name": "red slide"},
                    {"start": 4.2, "end": 9.5, "text": "the blue square spins", "name": "blue spin"},
                ],
            }
        ],
    }
    (video,) = benchmarks.parse_localization_videos(data, "benchmark_localization.json")
    assert (video.task, video.duration) == ("all", 9.5)
    assert video.steps == ["now the red circle slides left", "the blue square spins"]
    assert video.intervals == [[(0.0, 4.2)], [(4.2, 9.5)]]


def test_whole_video_span():
    assert benchmarks.whole_video_span(None, None, 14.5) == (0.0, 14.5)
    assert benchmarks.whole_video_span(2.0, float("nan"), 14.5) == (2.0, 14.5)
