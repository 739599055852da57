"""``mcn demo``: the whole product on this machine, ending with retrieval on videos training never saw.

sample corpus -> Ray extraction job (real decord/ffmpeg decoding, 2D and 3D networks, log-mel, word2vec) -> MCN
training -> zero-shot retrieval and step localisation on the held-out videos, next to chance -> HTML reports ->
one ``mcn search`` query on the held-out store.

The default preset (:func:`tiny`) runs the tiny twins of ResNet-152 and ResNeXt-101 with random weights on the
plain-background sample corpus, which a few minutes of CPU training learn from; :func:`full_size` runs the
real architectures (random weights unless given), which do not generalise in that time. Rerunning is cheap: the
corpus is reused when its config matches, extraction resumes (finished shards are skipped), training resumes from
its last checkpoint, and evaluation is redone.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mcn import options
from mcn.configs import config_to_dict, save_config
from mcn.errors import MCNError
from mcn.eval import config as eval_config
from mcn.pipeline import config as pipeline_config
from mcn.sample import config as sample_config
from mcn.train import config as train_config

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Sample corpus -> Ray extraction -> MCN training -> zero-shot retrieval on held-out videos, on CPU."
)
EPILOG = """examples:
  mcn demo                                  # everything under ./mcn-demo (about 8 CPU-minutes)
  mcn demo --out /tmp/demo --seed 1         # another corpus
  mcn demo --num-videos 24 --max-steps 50   # a quick look (too few held-out clips to mean much)
  mcn demo --preset full_size --weights-2d resnet152.pth --weights-3d resnext-101-kinetics.pth
  mcn demo --set train.optim.lr=1e-3 --set corpus.heldout_video_fraction=0.3
"""


def _report_with_thumbnails() -> eval_config.EvalConfig:
    """:func:`mcn.eval.config.quick_cpu` with frames of the retrieved clips in the report."""
    quick = eval_config.quick_cpu()
    return replace(quick, report=replace(quick.report, thumbnails=True, num_examples=4))


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The demo's jobs, each with its own config; the paths between them are set under ``out`` at run time.

    ``device`` is every stage's device (it replaces theirs). The training batch is sized to the corpus: at most
    one video per training video with captions, and no more k-means clusters than clips in a batch.
    """

    out: str = "mcn-demo"
    device: str = "auto"
    corpus: sample_config.SampleCorpusConfig = field(default_factory=sample_config.tiny_plain)
    extraction: pipeline_config.PipelineConfig = field(default_factory=pipeline_config.tiny_cpu)
    train: train_config.TrainConfig = field(default_factory=train_config.sample_tiny)
    eval: eval_config.EvalConfig = field(default_factory=_report_with_thumbnails)
    search_k: int = 5  # results the closing `mcn search` prints

    def __post_init__(self) -> None:
        if not train_config.DEVICE_PATTERN.fullmatch(self.device):
            raise MCNError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        models = self.extraction.extract.models
        for name, weights, model in [
            ("2d", models.weights_2d, models.model_2d),
            ("3d", models.weights_3d, models.model_3d),
        ]:
            if weights and not Path(weights).is_file():
                raise MCNError(f"--weights-{name} {weights}: no such file")
            if weights and model.endswith("-tiny"):
                raise MCNError(
                    f"--weights-{name} is for the full-size network; the {model} twin has random weights only: "
                    "add --preset full_size"
                )
        extraction = self.extraction
        extract = replace(extraction.extract, runtime=replace(extraction.extract.runtime, device=self.device))
        with_device = {
            "extraction": replace(extraction, extract=extract),
            "train": sized_to_corpus(replace(self.train, device=self.device), self.corpus.num_clean_train()),
            "eval": replace(self.eval, runtime=replace(self.eval.runtime, device=self.device)),
        }
        for name, value in with_device.items():
            object.__setattr__(self, name, value)


def sized_to_corpus(config: train_config.TrainConfig, num_videos: int) -> train_config.TrainConfig:
    """``config`` with a batch of at most ``num_videos`` videos and at most one k-means cluster per batch clip."""
    batch_videos = min(config.data.batch_videos, num_videos)
    num_clusters = min(config.kmeans.num_clusters, batch_videos * config.data.num_clips)
    if (batch_videos, num_clusters) != (config.data.batch_videos, config.kmeans.num_clusters):
        logger.info(
            "%d training videos with captions: batches of %d videos, %d k-means clusters",
            num_videos,
            batch_videos,
            num_clusters,
        )
    return replace(
        config,
        data=replace(config.data, batch_videos=batch_videos),
        kmeans=replace(config.kmeans, num_clusters=num_clusters),
    )


def tiny() -> DemoConfig:
    """Tiny twin networks (random weights) on 128 plain-background tiny videos, 600 training steps: a held-out
    benchmark of about 75 clips, retrieved well above chance, in about 8 CPU-minutes."""
    train = train_config.sample_tiny()
    return DemoConfig(
        corpus=replace(sample_config.tiny_plain(), num_videos=128),
        # an epoch is about 4 batches: loader processes would be started again every 4 steps
        train=replace(train, data=replace(train.data, num_workers=0)),
    )


def full_size() -> DemoConfig:
    """ResNet-152 and ResNeXt-101 (pass their weights for real features) on 32 videos of the demo corpus with
    the ``demo_cpu`` training recipe. With random weights this does not generalise to held-out videos."""
    return DemoConfig(
        corpus=replace(sample_config.demo(), num_videos=32),
        extraction=replace(pipeline_config.default(), ray=pipeline_config.RayConfig(num_cpus=2)),
        train=train_config.demo_cpu(),
    )


PRESETS = {"tiny": tiny, "full_size": full_size}

BINDINGS = {
    options.OUT.described("folder for every output (default: mcn-demo)"): "out",
    options.DEVICE: "device",
    options.NUM_VIDEOS.described("sample videos to generate (default: the preset's)"): "corpus.num_videos",
    options.SEED.described("corpus seed (default: 0)"): "corpus.seed",
    options.NUM_CPUS.described("CPUs of the local Ray (default: 2)"): "extraction.ray.num_cpus",
    options.WEIGHTS_2D.described("ResNet-152 state dict (.pth), with --preset full_size"): (
        "extraction.extract.models.weights_2d"
    ),
    options.WEIGHTS_3D.described("resnext-101-kinetics.pth, with --preset full_size"): (
        "extraction.extract.models.weights_3d"
    ),
    options.MAX_STEPS.described("training steps (default: the preset's)"): "train.schedule.max_steps",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_preset_and_set(parser, PRESETS, "tiny")
    options.add_flags(parser, BINDINGS)


def build_config(args: argparse.Namespace) -> DemoConfig:
    return options.build_config(PRESETS, args, BINDINGS)


def _corpus(config: sample_config.SampleCorpusConfig, folder: Path) -> None:
    from mcn.sample.corpus import CONFIG_FILE, generate_corpus

    saved = folder / CONFIG_FILE
    finished = saved.exists() and (folder / "ground_truth.json").exists()
    if finished and json.loads(saved.read_text()) == config_to_dict(config):
        print(f"[1/5] sample corpus: reusing {folder}")
        return
    print(f"[1/5] sample corpus: generating {config.num_videos} narrated videos in {folder}")
    summary = generate_corpus(folder, config.num_videos, config.seed, config=config, overwrite=True)
    print(
        f"      {summary.num_train} training + {summary.num_heldout} held-out videos, "
        f"{summary.total_seconds / 60:.1f} min of video, in {summary.seconds_taken:.0f} s"
    )


def _extract(config: DemoConfig, corpus: Path, stores: Path, timings: dict) -> None:
    """Both extraction jobs (training and held-out videos) on one local Ray, shut down after the second.

    One local Ray per process: after ``ray.shutdown()``, a second ``ray.init()`` in the same process starts a
    metrics exporter that Ray (2.60) never stops; its thread keeps exporting to the stopped Ray every 10 s
    through training and evaluation, and is still running when the interpreter exits.
    """
    import ray

    from mcn.pipeline.job import run_extraction, start_ray

    word_vectors = str(corpus / "word2vec.bin")
    jobs = {
        split: replace(
            config.extraction,
            input=str(corpus / split),
            out=str(stores / split),
            extract=replace(
                config.extraction.extract,
                text=replace(config.extraction.extract.text, word_vectors=word_vectors),
            ),
        )
        for split in ("train", "heldout")
    }
    started_ray = start_ray(jobs["train"])
    try:
        for split, job in jobs.items():
            print(f"[2/5] Ray extraction job: {corpus / split} -> {stores / split}")
            tick = time.perf_counter()
            run_extraction(job)  # on the Ray started above, which it leaves running
            timings[f"extract_{split}"] = time.perf_counter() - tick
    finally:
        if started_ray:
            ray.shutdown()


def _evaluate(config: DemoConfig, stores: Path, run: Path, corpus: Path, out: Path) -> dict[str, dict]:
    """Retrieval and localisation on the held-out store, and retrieval of seen training clips; folder ->
    metrics."""
    from mcn.eval.benchmarks import write_benchmark
    from mcn.eval.jobs import run_eval
    from mcn.eval.prepare import generic
    from mcn.sample.corpus import seen_clips_benchmark

    seen = seen_clips_benchmark(corpus, out / "seen_clips.csv")
    metrics = {}
    for kind, clips, store, folder in [
        ("retrieval", corpus / "benchmark_retrieval.csv", stores / "heldout", "retrieval"),
        ("localization", corpus / "benchmark_localization.json", stores / "heldout", "localization"),
        ("retrieval", seen, stores / "train", "retrieval-seen"),
    ]:
        # sample clips last 10-20 s: 2,000 log-mel frames; steps are scored as CrossTask's (cost = -score)
        bench = generic(clips, audio_frames=2000, score_normalisation="none")
        definition = out / "benchmarks" / f"{bench.name}.json"
        write_benchmark(definition, bench)
        job = replace(
            config.eval,
            kind=kind,
            checkpoints=(str(run),),
            benchmarks=(str(definition),),
            store=str(store),
            out=str(out / folder),
        )
        metrics[folder] = run_eval(job)
    return metrics


def retrieval_line(metrics: dict, task: str) -> str:
    """``task``'s reference-protocol R@1/5/10 and MedR of one retrieval run, each next to chance."""
    (prefix,) = [key.removesuffix("/R@10") for key in metrics if key.endswith(f"/reference/{task}/R@10")]
    recalls = ", ".join(
        f"R@{k} {100 * metrics[f'{prefix}/R@{k}']:.1f}% (chance {100 * metrics[f'{prefix}/chance_R@{k}']:.1f}%)"
        for k in (1, 5, 10)
    )
    return (
        f"{recalls}, MedR {metrics[f'{prefix}/MedR']:g} (chance {metrics[f'{prefix}/chance_MedR']:g}) "
        f"of {metrics[f'{prefix}/num_gallery']} clips"
    )


def _search(config: DemoConfig, store: Path, run: Path, clips: Path) -> None:
    """The first held-out query through ``mcn search``'s own command line."""
    from mcn.eval import search

    with clips.open(newline="") as handle:
        first = next(csv.DictReader(handle))
    arguments = [str(store), first["text"], "--checkpoint", str(run), "--preset", "quick_cpu"]
    arguments += ["--device", config.device, "-k", str(config.search_k)]
    print(f"$ mcn search {' '.join(arguments[:1] + [repr(first['text'])] + arguments[2:])}")
    print(f"  (the query's true clip is in {first['video_id']}, {first['start']}-{first['end']} s)")
    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    search.run(parser.parse_args(arguments))


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    root = Path(config.out).resolve()
    corpus, stores, run_dir, eval_dir = root / "corpus", root / "stores", root / "run", root / "eval"
    root.mkdir(parents=True, exist_ok=True)
    save_config(config, root / "demo_config.json")
    started = time.perf_counter()
    models = config.extraction.extract.models
    if not (models.weights_2d and models.weights_3d):
        print(f"note: {models.model_2d} and {models.model_3d} run with random weights")
    _corpus(config.corpus, corpus)
    timings = {}
    _extract(config, corpus, stores, timings)
    print(f"[3/5] training MCN on {stores / 'train'} -> {run_dir}")
    tick = time.perf_counter()
    from mcn.train.trainer import train

    train(
        replace(config.train, data=replace(config.train.data, store=str(stores / "train"))),
        run_dir,
        resume=True,
    )
    timings["train"] = time.perf_counter() - tick
    print(
        f"[4/5] zero-shot evaluation on the held-out videos (and, for reference, on seen clips) -> {eval_dir}"
    )
    tick = time.perf_counter()
    metrics = _evaluate(config, stores, run_dir, corpus, eval_dir)
    timings["eval"] = time.perf_counter() - tick
    print("[5/5] search")
    _search(config, stores / "heldout", run_dir, corpus / "benchmark_retrieval.csv")
    elapsed = time.perf_counter() - started
    print(
        f"\nmcn demo finished in {elapsed / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})"
    )
    heldout = metrics["retrieval"]
    print(f"held-out text->video:       {retrieval_line(heldout, 'text_to_video')}")
    print(f"held-out text->video+audio: {retrieval_line(heldout, 'text_to_video_audio')}")
    print(f"seen training clips, text->video: {retrieval_line(metrics['retrieval-seen'], 'text_to_video')}")
    print(f"HTML report: {eval_dir / 'retrieval' / 'report.html'}")
    print("outputs:")
    for label, path in [
        ("sample corpus + ground truth", corpus),
        ("feature stores (train, heldout)", stores),
        ("training run (checkpoints, metrics.jsonl, loss curves PNG, TensorBoard)", run_dir),
        ("localisation metrics + HTML report", eval_dir / "localization"),
        ("retrieval of seen training clips + HTML report", eval_dir / "retrieval-seen"),
        ("the resolved demo config", root / "demo_config.json"),
    ]:
        print(f"  {label:<72} {path}")
    return 0
