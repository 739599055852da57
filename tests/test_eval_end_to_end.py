"""Sample corpus -> extraction -> brief training -> zero-shot evaluation on the held-out benchmark (slow)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mcn import sample_corpus
from mcn.eval import jobs
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.job import run_extraction
from mcn.train import config as train_config
from mcn.train.trainer import train


def extract(videos, store, word_vectors) -> None:
    config = pipeline_config.tiny_cpu(str(videos), str(store))
    config.extract.text.word_vectors = str(word_vectors)
    config.progress = False
    run_extraction(config)


@pytest.mark.slow
def test_trained_model_retrieves_heldout_clips_far_above_chance(tmp_path):
    corpus = sample_corpus.generate_corpus(
        tmp_path / "corpus", num_videos=40, seed=0, config=sample_corpus.tiny()
    )
    extract(corpus.out_dir / "train", tmp_path / "store-train", corpus.word_vectors)
    extract(corpus.out_dir / "heldout", tmp_path / "store-heldout", corpus.word_vectors)

    config = train_config.demo_cpu()
    config = replace(config, data=replace(config.data, store=str(tmp_path / "store-train"), num_workers=0))
    config.logging.progress = False
    config.logging.tensorboard = False
    train(config, tmp_path / "run")

    retrieval = jobs.EvalConfig(
        kind="retrieval",
        checkpoints=[str(tmp_path / "run")],
        benchmarks=[str(corpus.benchmark_retrieval)],
        store=str(tmp_path / "store-heldout"),
        out=str(tmp_path / "eval"),
        thumbnails=False,
    )
    flat = jobs.run_eval(retrieval)
    prefix = "run/benchmark_retrieval/text_to_video"
    gallery = flat[f"{prefix}/gallery_size"]
    assert gallery >= 15
    # chance: R@10 = 10 / N and a median rank of about N / 2
    assert flat[f"{prefix}/R@10"] >= flat[f"{prefix}/chance_R@10"] + 0.25
    assert flat[f"{prefix}/MedR"] <= gallery / 4
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == flat
    assert (tmp_path / "eval" / "report.html").stat().st_size > 0

    localization = replace(
        retrieval,
        kind="localization",
        benchmarks=[str(corpus.benchmark_localization)],
        out=str(tmp_path / "eval-loc"),
    )
    flat = jobs.run_eval(localization)
    assert 0.0 <= flat["run/benchmark_localization/video_audio/recall_video_macro"] <= 1.0
