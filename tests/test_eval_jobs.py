"""The evaluation jobs end to end on a tiny store: both protocols against a brute-force computation from direct
model calls, outputs, word-vector rules, localisation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from eval_store import WORDS, direct_similarities, make_store, naive_protocol_metrics, save_tiny_checkpoint
from media import make_video

from mcn import cli
from mcn.errors import MCNError
from mcn.eval import benchmarks, config, jobs, protocols
from mcn.store import StoreReader, write_manifest

AUDIO_FRAMES = 256


def settings(reference: protocols.RankingProtocol, primary: str) -> protocols.RetrievalSettings:
    return protocols.RetrievalSettings(audio_frames=AUDIO_FRAMES, primary_task=primary, reference=reference)


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
    clips.insert(3, benchmarks.RetrievalClip("ghost", 0.0, 4.0, "crack eggs"))  # not in the store
    definitions = {
        "sample": settings(protocols.ROWS, "text_to_video_audio"),  # YouCook2's rules
        "msr": settings(protocols.msrvtt().reference, "text_to_video"),  # MSR-VTT's rules
    }
    for name, value in definitions.items():
        benchmarks.write_benchmark(root / f"{name}.json", benchmarks.RetrievalBenchmark(name, clips, value))
    checkpoints = [
        save_tiny_checkpoint(root / "runA" / "step-000010", seed=0),
        save_tiny_checkpoint(root / "runB" / "step-000010", seed=1),
    ]
    return root, ids, clips, checkpoints, definitions


@pytest.mark.slow
def test_retrieval_cli_both_protocols_several_checkpoints(setup, capsys):
    root, ids, clips, checkpoints, definitions = setup
    out = root / "out-retrieval"
    argv = ["eval", "retrieval", "--checkpoint", *map(str, checkpoints), "--benchmark", str(root / "sample.json"),
            str(root / "msr.json"), "--store", str(root / "store"), "--out", str(out), "--chunk-size", "3",
            "--batch-size", "5", "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "chance R@1/5/10, MedR" in printed and "strict" in printed and "1 missing" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    num_annotated = len(clips)
    for checkpoint, name in zip(checkpoints, ["runA_step-000010", "runB_step-000010"]):
        similarities, with_audio = direct_similarities(root / "store", checkpoint, clips, AUDIO_FRAMES)
        everything = list(range(len(with_audio)))
        for bench, value in definitions.items():
            prefix = f"{name}/{bench}"
            for protocol_name in protocols.PROTOCOLS:
                protocol = value.protocol(protocol_name)
                keep = everything if protocol.gallery == "present" else list(np.flatnonzero(with_audio))
                for task, similarity in similarities.items():
                    expected = naive_protocol_metrics(
                        similarity.tolist(), keep, num_annotated, protocol.denominator, protocol.median
                    )
                    for key, number in expected.items():
                        got = metrics[f"{prefix}/{protocol_name}/{task}/{key}"]
                        assert got == pytest.approx(number, rel=1e-5), (prefix, protocol_name, task, key)
                    assert metrics[f"{prefix}/{protocol_name}/{task}/num_gallery"] == len(keep)
                    assert metrics[f"{prefix}/{protocol_name}/{task}/chance_R@10"] == pytest.approx(
                        min(10, len(keep)) / len(keep)
                    )
            assert metrics[f"{prefix}/num_clips"] == 13 and metrics[f"{prefix}/num_clips_missing"] == 1
            assert metrics[f"{prefix}/num_clips_in_store"] == 12
            assert metrics[f"{prefix}/num_clips_with_audio"] == 10
            assert metrics[f"{prefix}/num_query_words"] == sum(len(c.text.split()) for c in clips)
        per_run = json.loads((out / name / "msr" / "metrics.json").read_text())
        assert per_run["reference/text_to_video/R@5"] == metrics[f"{name}/msr/reference/text_to_video/R@5"]
    assert metrics["runA_step-000010/msr/reference/text_to_video/num_counted"] == 13  # annotated
    assert metrics["runA_step-000010/sample/reference/text_to_video/num_counted"] == 12  # rows
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == "retrieval" and saved["runtime"]["chunk_size"] == 3
    used = json.loads((out / "settings.json").read_text())
    assert used["msr"]["settings"]["reference"]["gallery"] == "with_audio"
    page = (out / "report.html").read_text()
    assert page.index("<table class='summary'>") < page.index("<h2>")
    assert 'src="data:image/png;base64,' in page and "true clip" in page


def test_overrides_replace_the_definition_settings(setup):
    root, _, _, checkpoints, _ = setup
    made = replace(
        config.quick_cpu(),
        checkpoints=(str(checkpoints[0]),),
        benchmarks=(str(root / "sample.json"),),
        store=str(root / "store"),
        out=str(root / "out-override"),
        overrides=config.OverrideConfig(audio_frames=128, num_total=20),
    )
    flat = jobs.run_eval(made)
    prefix = "step-000010/sample"
    assert flat[f"{prefix}/audio_frames"] == 128
    assert flat[f"{prefix}/strict/text_to_video/num_counted"] == 20
    assert flat[f"{prefix}/strict/text_to_video/num_missing"] == 8
    assert (
        "audio frames overridden: 128 instead of 256" in (root / "out-override" / "report.html").read_text()
    )


def test_query_words_without_a_word2vec_file_are_an_error(setup, tmp_path):
    root, _, _, checkpoints, _ = setup
    unknown = [benchmarks.RetrievalClip("vid00", 0.0, 4.0, "crack the omelette")]
    definition = tmp_path / "unknown.json"
    benchmarks.write_benchmark(
        definition,
        benchmarks.RetrievalBenchmark("unknown", unknown, settings(protocols.ROWS, "text_to_video")),
    )
    store = tmp_path / "store"
    make_store(store)
    reader = StoreReader(store)
    write_manifest(store, {**reader.manifest, "vocabulary": {"word_vectors": str(tmp_path / "gone.bin")}})
    made = replace(
        config.quick_cpu(),
        checkpoints=(str(checkpoints[0]),),
        benchmarks=(str(definition),),
        store=str(store),
        out=str(tmp_path / "out"),
    )
    with pytest.raises(MCNError, match=r"'omelette'.*--word-vectors with .*gone\.bin.*--allow-missing-words"):
        jobs.run_eval(made)
    with pytest.raises(MCNError, match="does not exist"):
        jobs.run_eval(replace(made, text=config.TextConfig(word_vectors=str(tmp_path / "nope.bin"))))
    flat = jobs.run_eval(replace(made, text=config.TextConfig(allow_missing_words=True)))
    assert flat["step-000010/unknown/num_query_words"] == 3
    assert flat["step-000010/unknown/num_query_words_unknown"] == 1
    vectors = tmp_path / "vectors.txt"  # with the file, the word is looked up there
    vectors.write_text(f"1 {reader.words.dim}\nomelette {' '.join(['0.5'] * reader.words.dim)}\n")
    flat = jobs.run_eval(replace(made, text=config.TextConfig(word_vectors=str(vectors))))
    assert flat["step-000010/unknown/num_query_words_unknown"] == 0


def test_localization_job(setup):
    root, ids, _, checkpoints, _ = setup
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
        benchmarks.LocalizationVideo(ids[3], "A", ["whisk"] * 13, [whole] * 13),  # more steps than seconds
    ]
    loc_settings = replace(protocols.crosstask("a test list"), audio_frames=128)
    benchmarks.write_benchmark(
        root / "loc.json", benchmarks.LocalizationBenchmark("toy", videos, loc_settings)
    )
    made = replace(
        config.quick_cpu(),
        kind="localization",
        checkpoints=(str(checkpoints[0]),),
        benchmarks=(str(root / "loc.json"),),
        store=str(root / "store"),
        out=str(root / "out-loc"),
        runtime=config.RuntimeConfig(device="cpu", batch_size=4),
    )
    flat = jobs.run_eval(made)
    prefix = "step-000010/toy"
    assert flat[f"{prefix}/video_audio/task/A/recall"] == 1.0  # every second is inside every interval
    assert flat[f"{prefix}/video/task/A/recall"] == 1.0
    assert flat[f"{prefix}/num_videos_missing"] == 1 and flat[f"{prefix}/num_videos_too_short"] == 1
    assert flat[f"{prefix}/video_audio/num_videos"] == 3 and flat[f"{prefix}/video_audio/num_tasks"] == 2
    assert flat[f"{prefix}/audio_frames"] == 128
    for key in ("recall_task_macro", "recall_task_micro", "recall_video_macro"):
        assert 0.0 <= flat[f"{prefix}/video_audio/{key}"] <= 1.0
    page = (root / "out-loc" / "report.html").read_text()
    assert "recall task-macro" in page and "videos: a test list" in page


def test_kind_mismatch_and_missing_videos(setup):
    root, _, _, checkpoints, _ = setup
    made = replace(
        config.quick_cpu(),
        kind="localization",
        checkpoints=(str(checkpoints[0]),),
        benchmarks=(str(root / "sample.json"),),
        store=str(root / "store"),
        out=str(root / "out-bad"),
    )
    with pytest.raises(MCNError, match="not a localization benchmark"):
        jobs.run_eval(made)
    nothing = [benchmarks.RetrievalClip("zz", 0, 1, "eggs")]
    benchmarks.write_benchmark(
        root / "none.json",
        benchmarks.RetrievalBenchmark("none", nothing, settings(protocols.ROWS, "text_to_video")),
    )
    with pytest.raises(MCNError, match="mcn eval prepare"):
        jobs.run_eval(replace(made, kind="retrieval", benchmarks=(str(root / "none.json"),)))
    silent = [benchmarks.RetrievalClip("vid05", 0, 4, "eggs")]
    benchmarks.write_benchmark(
        root / "silent.json", benchmarks.RetrievalBenchmark("silent", silent, protocols.msrvtt())
    )
    with pytest.raises(MCNError, match="gallery rule 'with_audio'"):
        jobs.run_eval(replace(made, kind="retrieval", benchmarks=(str(root / "silent.json"),)))


def test_checkpoint_names():
    assert jobs.checkpoint_names(["a/run1", "b/mcn.pth"]) == ["run1", "mcn"]
    assert jobs.checkpoint_names(["a/step-1", "b/step-1"]) == ["a_step-1", "b_step-1"]
