"""The evaluation jobs end to end on a tiny store: metrics against an independent computation, outputs, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_store import WORDS, make_store, save_tiny_checkpoint
from media import make_video

from mcn import cli
from mcn.errors import MCNError
from mcn.eval import benchmarks, jobs, report, retrieval
from mcn.store import StoreReader
from mcn.train.checkpoint import load_model
from mcn.train.clips import audio_window, pool_video

AUDIO_FRAMES = 256


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    source = make_video(root / "vid00.mp4", seconds=3.0, audio=False)
    ids = make_store(
        root / "store", silent=("vid05",), sources={"vid00": str(source), "vid01": str(root / "gone.mp4")}
    )
    clips = [
        benchmarks.RetrievalClip(v, float(s), float(s + 4), f"{WORDS[i % 12]} the {WORDS[(3 * i + 1) % 12]}")
        for i, (v, s) in enumerate((v, s) for v in ids for s in (1, 6))
    ]
    clips.append(benchmarks.RetrievalClip("ghost", 0.0, 4.0, "crack eggs"))  # not in the store: a miss
    benchmarks.write_retrieval_csv(root / "sample.csv", benchmarks.RetrievalBenchmark("sample", clips))
    checkpoints = [
        save_tiny_checkpoint(root / "runA" / "step-000010", seed=0),
        save_tiny_checkpoint(root / "runB" / "step-000010", seed=1),
    ]
    return root, ids, clips, checkpoints


def expected_metrics(store_root, checkpoint, clips) -> dict:
    """Full similarity matrices from direct model calls, scored with the tested metric function."""
    reader = StoreReader(store_root)
    model, _ = load_model(checkpoint)
    video, audio, text, with_audio = [], [], [], []
    for clip in clips:
        if clip.video_id not in reader:
            continue
        record = reader.read(clip.video_id)
        window, nframes = audio_window(record.logmel, clip.start, clip.end, AUDIO_FRAMES)
        ids = [WORDS.index(w) for w in clip.text.split() if w in WORDS][:20]
        words = np.zeros((20, reader.words.dim), np.float32)
        words[: len(ids)] = reader.words.lookup(np.array(ids))
        with torch.no_grad():
            video.append(
                model.encode_video(
                    torch.from_numpy(pool_video(record.feat_2d, record.feat_3d, clip.start, clip.end))[None]
                )[0]
            )
            audio.append(model.encode_audio(torch.from_numpy(window)[None], torch.tensor([nframes]))[0])
            text.append(model.encode_text(torch.from_numpy(words)[None])[0])
        with_audio.append(record.has_audio)
    video, audio, text = (torch.stack(x).numpy() for x in (video, audio, text))
    mask = np.array(with_audio)
    total = len(clips)
    return {
        "text_to_video_audio": retrieval.retrieval_metrics(
            text[mask] @ (video[mask] + audio[mask]).T, num_total=total
        ),
        "text_to_video_audio_present": retrieval.retrieval_metrics(
            text[mask] @ (video[mask] + audio[mask]).T
        ),
        "text_to_video": retrieval.retrieval_metrics(text @ video.T, num_total=total),
    }


def test_retrieval_cli_several_checkpoints(setup, capsys):
    root, ids, clips, checkpoints = setup
    out = root / "out-retrieval"
    argv = [
        "eval",
        "retrieval",
        "--checkpoint",
        *map(str, checkpoints),
        "--benchmark",
        str(root / "sample.csv"),
        "--store",
        str(root / "store"),
        "--out",
        str(out),
        "--audio-frames",
        str(AUDIO_FRAMES),
        "--chunk-size",
        "3",
        "--batch-size",
        "5",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "chance R@10" in printed and "text_to_video_audio" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for checkpoint, name in zip(checkpoints, ["runA_step-000010", "runB_step-000010"]):
        expected = expected_metrics(root / "store", checkpoint, clips)
        for task, values in expected.items():
            for key, value in values.items():
                assert metrics[f"{name}/sample/{task}/{key}"] == pytest.approx(value, rel=1e-5), (
                    name,
                    task,
                    key,
                )
        assert metrics[f"{name}/sample/num_clips"] == 13
        assert metrics[f"{name}/sample/num_clips_in_store"] == 12
        assert metrics[f"{name}/sample/num_clips_with_audio"] == 10
        assert metrics[f"{name}/sample/text_to_video/chance_R@10"] == pytest.approx(10 / 12)
        per_run = json.loads((out / name / "sample" / "metrics.json").read_text())
        assert per_run["text_to_video/R@5"] == metrics[f"{name}/sample/text_to_video/R@5"]
    config = json.loads((out / "config.json").read_text())
    assert config["retrieval"]["audio_frames"] == AUDIO_FRAMES and config["kind"] == "retrieval"
    page = (out / "report.html").read_text()
    assert page.count("<table") >= 2 and 'src="data:image/png;base64,' in page
    assert "Sample queries" in page and "score " in page


def test_thumbnail_decoding(setup):
    root = setup[0]
    assert report.thumbnail_jpeg(str(root / "vid00.mp4"), 1.5) is not None
    assert report.thumbnail_jpeg(str(root / "gone.mp4"), 1.0) is None
    assert report.thumbnail_jpeg("", 1.0) is None


def test_report_renders_tables_plots_and_thumbnails(setup):
    root = setup[0]
    hits = [
        report.RetrievedClip("vid00", 1.0, 2.0, 0.9, True, str(root / "vid00.mp4")),
        report.RetrievedClip("vid01", 6.0, 10.0, 0.5, False, str(root / "gone.mp4")),
    ]
    section = report.Section(
        "ckpt",
        "sample",
        "retrieval",
        {"text_to_video/R@1": 0.5, "text_to_video/gallery_size": 2},
        curves={"text_to_video": np.array([0.5, 1.0])},
        examples=[report.QueryExample("crack <the> eggs", "vid00", 1.0, 2.0, hits)],
    )
    page = report.render_report("title", [section], {"kind": "retrieval"})
    assert "<table" in page and 'src="data:image/png;base64,' in page
    assert page.count('src="data:image/jpeg;base64,') == 1 and "no frame" in page
    assert "crack &lt;the&gt; eggs" in page and "50.00" in page
    assert "no frame" in report.render_report("t", [section], {}, thumbnails=False)


def test_localization_job(setup):
    root, ids, _, checkpoints = setup
    whole = [(0.0, 12.0)]
    videos = [
        benchmarks.LocalizationVideo(
            ids[0], "A", ["crack the eggs", "whisk", "serve"], [whole, whole, whole]
        ),
        benchmarks.LocalizationVideo(
            ids[1], "B", ["pour batter", "flip pancake"], [[(2.0, 3.0)], [(8.2, 9.7)]]
        ),
        benchmarks.LocalizationVideo(ids[2], "B", ["add salt", "serve"], [[(0.0, 1.0)], []]),
        benchmarks.LocalizationVideo("ghost", "B", ["add salt"], [[(0.0, 1.0)]]),
        benchmarks.LocalizationVideo(ids[3], "A", ["w"] * 13, [whole] * 13),  # more steps than seconds
    ]
    benchmarks.write_localization_json(root / "loc.json", benchmarks.LocalizationBenchmark("toy", videos))
    config = jobs.EvalConfig(
        kind="localization",
        checkpoints=[str(checkpoints[0])],
        benchmarks=[str(root / "loc.json")],
        store=str(root / "store"),
        out=str(root / "out-loc"),
        batch_size=4,
    )
    config.localization.audio_frames = 128
    flat = jobs.run_eval(config)
    prefix = "step-000010/toy"
    assert flat[f"{prefix}/video_audio/task/A/recall"] == 1.0  # every second is inside every interval
    assert flat[f"{prefix}/video/task/A/recall"] == 1.0
    assert flat[f"{prefix}/num_videos_missing"] == 1 and flat[f"{prefix}/num_videos_too_short"] == 1
    assert flat[f"{prefix}/video_audio/num_videos"] == 3 and flat[f"{prefix}/video_audio/num_tasks"] == 2
    for key in ("recall_task_macro", "recall_task_micro", "recall_video_macro"):
        assert 0.0 <= flat[f"{prefix}/video_audio/{key}"] <= 1.0
    page = (root / "out-loc" / "report.html").read_text()
    assert "<table" in page and 'src="data:image/png;base64,' in page


def test_kind_mismatch_and_missing_videos(setup):
    root, _, _, checkpoints = setup
    config = jobs.EvalConfig(
        kind="localization",
        checkpoints=[str(checkpoints[0])],
        benchmarks=[str(root / "sample.csv")],
        store=str(root / "store"),
        out=str(root / "out-bad"),
    )
    with pytest.raises(MCNError, match="not a localization benchmark"):
        jobs.run_eval(config)
    benchmarks.write_retrieval_csv(
        root / "none.csv",
        benchmarks.RetrievalBenchmark("none", [benchmarks.RetrievalClip("zz", 0, 1, "eggs")]),
    )
    config = jobs.EvalConfig(
        kind="retrieval",
        checkpoints=[str(checkpoints[0])],
        benchmarks=[str(root / "none.csv")],
        store=str(root / "store"),
        out=str(root / "out-none"),
    )
    with pytest.raises(MCNError, match="mcn eval prepare"):
        jobs.run_eval(config)
    with pytest.raises(ValueError, match="kind"):
        jobs.EvalConfig(kind="captioning", checkpoints=["x"], benchmarks=["y"], store="s", out="o")


def test_presets_and_names():
    assert jobs.retrieval_settings_for("youcook2", jobs.RetrievalSettings()) == (5120, None)
    assert jobs.retrieval_settings_for("msrvtt", jobs.RetrievalSettings()) == (3072, 1000)
    assert jobs.retrieval_settings_for("sample", jobs.RetrievalSettings(audio_frames=99)) == (99, None)
    assert jobs.checkpoint_names(["a/run1", "b/mcn.pth"]) == ["run1", "mcn"]
    assert jobs.checkpoint_names(["a/step-1", "b/step-1"]) == ["a_step-1", "b_step-1"]
