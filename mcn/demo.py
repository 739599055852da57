"""``mcn demo``: the whole product on the embedded default, on CPU.

sample corpus -> Ray extraction job (real decord/ffmpeg decoding, ResNet-152, ResNeXt-101, log-mel, word2vec)
-> MCN training -> zero-shot retrieval and step localisation on the held-out videos -> metrics next to chance.

Rerunning is cheap: the corpus is reused when its config matches, extraction resumes (finished shards are
skipped), training resumes from its last checkpoint, and evaluation is redone.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mcn.configs import config_to_dict
from mcn.errors import MCNError

DESCRIPTION = (
    "Sample corpus -> Ray extraction -> MCN training -> zero-shot retrieval, all on this machine's CPU."
)
EPILOG = """examples:
  mcn demo                                  # everything under ./mcn-demo (about 10-15 minutes on 2 cores)
  mcn demo --out /tmp/demo --videos 24      # a smaller corpus
  mcn demo --resnet152-weights resnet152.pth --resnext101-weights resnext-101-kinetics.pth
"""


@dataclass
class DemoConfig:
    out: str = "mcn-demo"
    num_videos: int = 32
    seed: int = 0
    train_steps: int = 300
    num_cpus: int = 2
    resnet152_weights: str | None = None
    resnext101_weights: str | None = None

    def __post_init__(self) -> None:
        if self.num_videos < 8:
            raise ValueError(
                f"--videos must be at least 8 so that a held-out benchmark remains (got {self.num_videos})"
            )
        if self.train_steps < 1:
            raise ValueError("--train-steps must be >= 1")
        if self.num_cpus < 1:
            raise ValueError("--cpus must be >= 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default=DemoConfig.out, help="folder for every output (default: %(default)s)"
    )
    parser.add_argument("--videos", type=int, default=DemoConfig.num_videos, help="sample videos to generate")
    parser.add_argument("--seed", type=int, default=DemoConfig.seed, help="corpus seed")
    parser.add_argument("--train-steps", type=int, default=DemoConfig.train_steps, help="training steps")
    parser.add_argument("--cpus", type=int, default=DemoConfig.num_cpus, help="CPUs for the local Ray")
    parser.add_argument(
        "--resnet152-weights", help="torchvision ResNet-152 state dict (default: random init)"
    )
    parser.add_argument("--resnext101-weights", help="resnext-101-kinetics.pth (default: random init)")


def _corpus(config: DemoConfig, folder: Path):
    from mcn.sample import config as sample_config
    from mcn.sample.corpus import CONFIG_FILE, generate_corpus

    corpus_config = replace(sample_config.demo(), num_videos=config.num_videos, seed=config.seed)
    saved = folder / CONFIG_FILE
    finished = saved.exists() and (folder / "ground_truth.json").exists()
    if finished and json.loads(saved.read_text()) == config_to_dict(corpus_config):
        print(f"[1/4] sample corpus: reusing {folder}")
        return
    print(f"[1/4] sample corpus: generating {config.num_videos} narrated videos in {folder}")
    summary = generate_corpus(folder, config.num_videos, config.seed, config=corpus_config, overwrite=True)
    print(
        f"      {summary.num_train} training + {summary.num_heldout} held-out videos, "
        f"{summary.total_seconds / 60:.1f} min of video, in {summary.seconds_taken:.0f} s"
    )


def _extract(config: DemoConfig, videos: Path, store: Path, word_vectors: Path) -> dict:
    from mcn import extract
    from mcn.pipeline import config as pipeline_config
    from mcn.pipeline.job import run_extraction

    extract_config = extract.default()
    extract_config = replace(
        extract_config,
        models=replace(
            extract_config.models,
            weights_2d=config.resnet152_weights,
            weights_3d=config.resnext101_weights,
        ),
        text=replace(extract_config.text, word_vectors=str(word_vectors)),
    )
    job = replace(
        pipeline_config.default(),
        input=str(videos),
        out=str(store),
        extract=extract_config,
        ray=pipeline_config.RayConfig(num_cpus=config.num_cpus),
    )
    return run_extraction(job)


def _train(config: DemoConfig, store: Path, run: Path) -> dict:
    from mcn.train import config as train_config
    from mcn.train.trainer import train

    preset = train_config.demo_cpu()
    preset = replace(
        preset,
        data=replace(preset.data, store=str(store)),
        schedule=replace(preset.schedule, max_steps=config.train_steps),
        seed=config.seed + 1,
    )
    return train(preset, run, resume=True)


def _evaluate(stores: Path, run: Path, corpus: Path, out: Path) -> dict:
    from mcn.eval import config as eval_config
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
        config = replace(
            eval_config.default(),
            kind=kind,
            checkpoints=(str(run),),
            benchmarks=(str(definition),),
            store=str(store),
            out=str(out / folder),
        )
        metrics.update(run_eval(config))
    return metrics


def run(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out=args.out,
        num_videos=args.videos,
        seed=args.seed,
        train_steps=args.train_steps,
        num_cpus=args.cpus,
        resnet152_weights=args.resnet152_weights,
        resnext101_weights=args.resnext101_weights,
    )
    for weights in (config.resnet152_weights, config.resnext101_weights):
        if weights and not Path(weights).is_file():
            raise MCNError(f"weights file {weights} does not exist")
    root = Path(config.out).resolve()
    corpus, stores, run_dir, eval_dir = root / "corpus", root / "stores", root / "run", root / "eval"
    started = time.perf_counter()
    if config.resnet152_weights is None or config.resnext101_weights is None:
        print(
            "WARNING: no pretrained ResNet-152 / ResNeXt-101 weights given: the real architectures run with "
            "random initialisation (pass --resnet152-weights / --resnext101-weights for real features)"
        )
    _corpus(config, corpus)
    word_vectors = corpus / "word2vec.bin"
    timings = {}
    for split in ("train", "heldout"):
        print(f"[2/4] Ray extraction job: {corpus / split} -> {stores / split}")
        tick = time.perf_counter()
        _extract(config, corpus / split, stores / split, word_vectors)
        timings[f"extract_{split}"] = time.perf_counter() - tick
    print(f"[3/4] training MCN on {stores / 'train'} -> {run_dir}")
    tick = time.perf_counter()
    _train(config, stores / "train", run_dir)
    timings["train"] = time.perf_counter() - tick
    print(
        f"[4/4] zero-shot evaluation on the held-out videos (and, for reference, on seen clips) -> {eval_dir}"
    )
    tick = time.perf_counter()
    metrics = _evaluate(stores, run_dir, corpus, eval_dir)
    timings["eval"] = time.perf_counter() - tick
    elapsed = time.perf_counter() - started
    print(
        f"\nmcn demo finished in {elapsed / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})"
    )
    print("outputs:")
    for label, path in [
        ("sample corpus + ground truth", corpus),
        ("training feature store", stores / "train"),
        ("held-out feature store", stores / "heldout"),
        ("training run (checkpoints, metrics.jsonl, loss curves PNG, TensorBoard)", run_dir),
        ("retrieval metrics + HTML report", eval_dir / "retrieval"),
        ("localisation metrics + HTML report", eval_dir / "localization"),
        ("retrieval of seen training clips (shows what training learnt)", eval_dir / "retrieval-seen"),
    ]:
        print(f"  {label:<72} {path}")
    print(f"  {'all metrics':<72} {eval_dir}/*/metrics.json ({len(metrics)} values)")
    return 0
