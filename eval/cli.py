"""``mcn eval prepare|retrieval|localization``: zero-shot evaluation batch jobs."""

from __future__ import annotations

import argparse

DESCRIPTION = "zero-shot retrieval and step-localisation batch jobs (several checkpoints x benchmarks)"
EPILOG = """examples:
  mcn eval prepare youcook2 --annotations youcookii_annotations_trainval.json --videos yc2/ --out yc2-store/ \\
      --word-vectors GoogleNews-vectors-negative300.bin
  mcn eval prepare crosstask --annotations tasks_primary.txt annotations/ --videos ct/ --out ct-store/
  mcn eval retrieval --checkpoint runs/a runs/b/checkpoints/step-004000 mcn_released.pth \\
      --benchmark yc2-store/benchmarks/youcook2.csv --store yc2-store/ --out results/yc2
  mcn eval localization --checkpoint runs/a --benchmark ct-store/benchmarks/crosstask.json --store ct-store/ \\
      --out results/crosstask --device cuda
  mcn eval retrieval --checkpoint runs/demo --benchmark corpus/benchmark_retrieval.csv --store store/ --out eval/
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="step-N folders, RUN folders (their latest step) or released MCN .pth files",
    )
    parser.add_argument(
        "--benchmark", nargs="+", required=True, metavar="DEF", help="generic benchmark definitions"
    )
    parser.add_argument("--store", required=True, help="the feature store holding the benchmark videos")
    parser.add_argument("--out", required=True, help="output folder: metrics.json, config.json, report.html")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per model call (default: 64)")
    parser.add_argument(
        "--chunk-size", type=int, default=1024, help="query rows per similarity block (default: 1024)"
    )
    parser.add_argument(
        "--word-vectors",
        help="word2vec file for query words missing from the store's word table "
        "(default: the one the store manifest records)",
    )
    parser.add_argument(
        "--audio-frames", type=int, help="log-mel frames per clip (default: the benchmark's preset)"
    )
    parser.add_argument(
        "--num-total",
        type=int,
        help="retrieval: clips the benchmark counts (default: its preset, MSR-VTT 1000)",
    )
    parser.add_argument("--no-thumbnails", action="store_true", help="do not decode frames for the report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = sub.add_parser("prepare", help="official annotations + videos -> benchmark definition + store")
    prepare.add_argument(
        "benchmark", choices=["youcook2", "msrvtt", "crosstask", "mining_youtube", "generic"]
    )
    prepare.add_argument(
        "--annotations",
        nargs="+",
        required=True,
        help="youcook2: the trainval JSON; msrvtt: the JSFusion test CSV; crosstask: tasks_primary.txt "
        "and the annotations folder (and optionally a task,video,url CSV); mining_youtube: the "
        "folder of per-video segment files; generic: a definition file",
    )
    prepare.add_argument(
        "--videos", required=True, help="folder with the benchmark videos, named <video_id>.<ext>"
    )
    prepare.add_argument(
        "--out", required=True, help="the store to write (the definition goes to OUT/benchmarks/)"
    )
    prepare.add_argument("--preset", default="default", help="extraction preset (default, tiny_cpu)")
    prepare.add_argument("--word-vectors", help="word2vec file for the extraction (recorded in the store)")
    prepare.add_argument("--split", default="validation", help="YouCook2 subset (default: validation)")
    prepare.add_argument(
        "--frame-rate", type=float, help="Mining YouTube: annotation times are frames at this rate"
    )
    for name, help_ in (
        ("retrieval", "text-to-clip retrieval: R@1/5/10, median and mean rank"),
        ("localization", "ordered step localisation: recall (CrossTask, Mining YouTube)"),
    ):
        _add_common(sub.add_parser(name, help=help_))


def run(args: argparse.Namespace) -> int:
    if args.action == "prepare":
        from mcn.eval.prepare import PrepareConfig, run_prepare

        run_prepare(
            PrepareConfig(
                args.benchmark,
                args.annotations,
                args.videos,
                args.out,
                args.preset,
                args.word_vectors,
                args.split,
                args.frame_rate,
            )
        )
        return 0
    from mcn.eval.jobs import EvalConfig, LocalizationSettings, RetrievalSettings, run_eval

    config = EvalConfig(
        kind=args.action,
        checkpoints=args.checkpoint,
        benchmarks=args.benchmark,
        store=args.store,
        out=args.out,
        device=args.device,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        word_vectors=args.word_vectors,
        thumbnails=not args.no_thumbnails,
        retrieval=RetrievalSettings(audio_frames=args.audio_frames, num_total=args.num_total),
        localization=LocalizationSettings(
            **({"audio_frames": args.audio_frames} if args.audio_frames else {})
        ),
    )
    run_eval(config)
    print(f"\nmetrics: {args.out}/metrics.json  report: {args.out}/report.html")
    return 0
