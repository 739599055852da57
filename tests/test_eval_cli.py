"""The real `mcn eval ...` and `mcn search` commands in subprocesses: exit codes, outputs, and `mcn eval score`
agreeing with `mcn eval retrieval` on the same similarities."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from eval_store import WORDS, direct_similarities, make_store, save_tiny_checkpoint
from media import make_video

from mcn import storage
from mcn.eval import benchmarks, protocols
from mcn.store import StoreReader, copy_store

AUDIO_FRAMES = 320


def mcn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MCN_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "mcn", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-cli")
    ids = make_store(root / "store", num_videos=8, silent=("vid06",))
    clips = [
        benchmarks.RetrievalClip(v, float(s), float(s + 4), f"{WORDS[i % 12]} the {WORDS[(5 * i + 2) % 12]}")
        for i, (v, s) in enumerate((v, s) for v in ids for s in (0, 5))
    ]
    clips += [benchmarks.RetrievalClip("gone", 0.0, 4.0, "crack the eggs")]
    settings = protocols.RetrievalSettings(
        audio_frames=AUDIO_FRAMES, primary_task="text_to_video", reference=protocols.msrvtt().reference
    )
    benchmarks.write_benchmark(root / "msr.json", benchmarks.RetrievalBenchmark("msr", clips, settings))
    checkpoint = save_tiny_checkpoint(root / "run" / "step-000005", seed=3)
    return root, clips, checkpoint


@pytest.mark.slow
def test_eval_retrieval_and_score_agree(setup, tmp_path):
    root, clips, checkpoint = setup
    out = tmp_path / "out"
    result = mcn("eval", "retrieval", "--checkpoint", checkpoint, "--benchmark", root / "msr.json",
                 "--store", root / "store", "--out", out, "--preset", "quick_cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reference" in result.stdout and "report:" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    similarities, with_audio = direct_similarities(root / "store", checkpoint, clips, AUDIO_FRAMES)
    for protocol in protocols.PROTOCOLS:
        keep = np.flatnonzero(with_audio) if protocol == "reference" else np.arange(len(with_audio))
        for task, similarity in similarities.items():
            np.save(tmp_path / "similarity.npy", similarity[np.ix_(keep, keep)])
            scored = mcn("eval", "score", tmp_path / "similarity.npy", "--benchmark", root / "msr.json",
                         "--protocol", protocol)  # fmt: skip
            assert scored.returncode == 0, scored.stderr
            printed = json.loads(scored.stdout)
            for key, value in printed.items():
                assert metrics[f"step-000005/msr/{protocol}/{task}/{key}"] == pytest.approx(value, rel=1e-6)


@pytest.mark.slow
def test_eval_score_named_benchmarks_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", rng.standard_normal((968, 968)).astype(np.float32))
    result = mcn("eval", "score", tmp_path / "s.npy", "--benchmark", "msrvtt")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["num_counted"] == 1000 and printed["num_missing"] == 32 and set(printed) >= {"R@1", "MedR"}
    strict = json.loads(
        mcn("eval", "score", tmp_path / "s.npy", "--benchmark", "msrvtt", "--protocol", "strict").stdout
    )
    assert strict["R@10"] == printed["R@10"] and strict["MedR"] > printed["MedR"]
    generic = json.loads(mcn("eval", "score", tmp_path / "s.npy", "--benchmark", "generic").stdout)
    assert generic["num_counted"] == 968
    no_total = mcn("eval", "score", tmp_path / "s.npy", "--benchmark", "generic", "--protocol", "strict")
    assert (
        no_total.returncode == 2 and "--num-total" in no_total.stderr and "Traceback" not in no_total.stderr
    )
    broken = rng.standard_normal((5, 5))
    broken[2] = np.nan
    np.save(tmp_path / "nan.npy", broken)
    result = mcn("eval", "score", tmp_path / "nan.npy", "--benchmark", "youcook2")
    assert result.returncode == 2 and "NaN" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_search_cli(setup):
    root, _, checkpoint = setup
    result = mcn(
        "search",
        root / "store",
        "--checkpoint",
        checkpoint,
        "whisk the batter",
        "-k",
        "2",
        "--preset",
        "quick_cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "videos for 'whisk the batter'" in result.stdout and "built index" in result.stderr
    assert len(result.stdout.split("moments:")[1].strip().splitlines()) == 2


def localization_definition(path, ids: list[str]) -> None:
    videos = [
        benchmarks.LocalizationVideo(ids[0], "A", ["crack the eggs", "whisk"], [[(0.0, 4.0)], [(6.0, 12.0)]]),
        benchmarks.LocalizationVideo(
            ids[1], "B", ["pour batter", "flip pancake"], [[(2.0, 3.0)], [(8.0, 9.5)]]
        ),
        benchmarks.LocalizationVideo(ids[6], "B", ["add salt", "serve"], [[(0.0, 1.0)], [(5.0, 7.0)]]),
    ]
    settings = dataclasses.replace(protocols.crosstask("three videos"), audio_frames=128)
    benchmarks.write_benchmark(path, benchmarks.LocalizationBenchmark("toy", videos, settings))


@pytest.mark.slow
def test_eval_on_a_bucket_store_equals_the_local_run(setup, s3_bucket, tmp_path):
    root, _, checkpoint = setup
    localization_definition(tmp_path / "loc.json", StoreReader(root / "store").video_ids)
    url = f"{s3_bucket}/stores/eval"
    copy_store(root / "store", url)
    for definition in (root / "msr.json", tmp_path / "loc.json"):
        storage.copy(definition, f"{s3_bucket}/benchmarks/{definition.name}")
    for kind, definition in (("retrieval", root / "msr.json"), ("localization", tmp_path / "loc.json")):
        runs = {
            "local": (root / "store", definition),
            "bucket": (url, f"{s3_bucket}/benchmarks/{definition.name}"),  # the definition in the bucket too
        }
        metrics = {}
        for where, (store, bench) in runs.items():
            out = tmp_path / f"{kind}-{where}"
            result = mcn("eval", kind, "--checkpoint", checkpoint, "--benchmark", bench, "--store", store,
                         "--out", out, "--preset", "quick_cpu")  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            metrics[where] = json.loads((out / "metrics.json").read_text())
        assert metrics["bucket"] == metrics["local"] and len(metrics["local"]) > 10
    assert metrics["local"]["step-000005/toy/video_audio/num_videos"] == 3


@pytest.mark.slow
def test_search_on_a_bucket_store_equals_the_local_run_and_caches_its_index_there(setup, s3_bucket, tmp_path):
    root, _, checkpoint = setup
    local = tmp_path / "store"
    make_store(local, num_videos=8, silent=("vid06",))  # no index yet: test_search_cli leaves one in setup's
    url = f"{s3_bucket}/stores/search"
    copy_store(local, url)
    query = ("--checkpoint", checkpoint, "whisk the batter", "-k", "5", "--preset", "quick_cpu")
    printed = {}
    for where, store in (("local", local), ("bucket", url), ("bucket again", url)):
        result = mcn("search", store, *query)
        assert result.returncode == 0, result.stderr[-3000:]
        printed[where] = result.stdout
        assert ("using index" if where == "bucket again" else "built index") in result.stderr
    assert printed["bucket"] == printed["local"] == printed["bucket again"]
    assert "videos for 'whisk the batter'" in printed["local"]
    names = [storage.name(path) for path in storage.list_files(storage.join(url, "index"))]
    assert names == [storage.name(path) for path in storage.list_files(local / "index")]
    assert len(names) == 2 and names[0].endswith(".config.json") and names[1].endswith(".npz")


@pytest.mark.slow
def test_eval_prepare_extracts_the_benchmark_videos(tmp_path):
    videos = tmp_path / "videos"
    for name in ("clip_a", "clip_b"):
        make_video(videos / f"{name}.mp4", seconds=3.0)
    clips = tmp_path / "clips.csv"
    benchmarks.write_retrieval_clips(
        clips,
        [
            benchmarks.RetrievalClip("clip_a", 0.0, 2.0, "a"),
            benchmarks.RetrievalClip("clip_c", None, None, "c"),
        ],
    )
    store = tmp_path / "store"
    result = mcn("eval", "prepare", "generic", "--annotations", clips, "--audio-frames", "300", "--videos", videos,
                 "--out", store, "--preset", "tiny_cpu", "--num-cpus", "1", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 videos found, 1 missing" in result.stdout and "1 videos extracted" in result.stdout
    bench = benchmarks.load_benchmark(store / "benchmarks" / "clips.json")
    assert bench.settings.audio_frames == 300 and len(bench.clips) == 2
    reader = StoreReader(store)
    assert "clip_a" in reader and "clip_b" not in reader  # only the benchmark's videos were extracted
