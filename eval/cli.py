"""The parser pieces and runners of ``mcn eval``: ``retrieval``, ``localization`` and ``score``, and the
evaluation side of ``prepare``.

``mcn eval`` itself is :mod:`mcn.zero_shot`, which adds the extraction job to ``prepare`` (evaluation never
imports the pipeline). Jobs build their config through :mod:`mcn.options`: ``--preset`` (:data:`PRESETS`), then
the flags, then ``--set section.key=value``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from mcn import options
from mcn.errors import MCNError
from mcn.eval.protocols import PROTOCOLS

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Zero-shot evaluation: prepare benchmark stores and definitions, score checkpoints on them (retrieval, "
    "step localisation) under the reference and strict protocols, or score a similarity matrix you bring."
)
EPILOG = """examples:
  mcn eval prepare youcook2 --annotations youcookii_annotations_trainval.json --videos yc2/ --out yc2-store/ \\
      --word-vectors GoogleNews-vectors-negative300.bin --weights-2d resnet152.pth --weights-3d resnext-101-kinetics.pth
  mcn eval prepare crosstask --annotations tasks_primary.txt annotations/ --video-list videos_val.csv \\
      --videos ct/ --out ct-store/ --word-vectors GoogleNews-vectors-negative300.bin
  mcn eval prepare generic --annotations corpus/benchmark_retrieval.csv --audio-frames 2000 \\
      --videos corpus/heldout --out heldout-store/ --preset tiny_cpu --no-extract
  mcn eval retrieval --checkpoint runs/a runs/b/checkpoints/step-004000 mcn_released.pth \\
      --benchmark yc2-store/benchmarks/youcook2.json --store yc2-store/ --out results/yc2
  mcn eval localization --checkpoint runs/a --benchmark ct-store/benchmarks/crosstask.json --store ct-store/ \\
      --out results/crosstask --device cuda
  mcn eval score similarity.npy --benchmark msrvtt --protocol strict
"""

_FORMATTER = argparse.RawDescriptionHelpFormatter
CHUNK_SIZE = options.Flag("--chunk-size", "query rows per similarity block (memory: chunk x gallery)", "N")
AUDIO_FRAMES = options.Flag(
    "--audio-frames", "log-mel frames per clip (default: the benchmark definition's setting)", "N"
)
NUM_TOTAL = options.Flag(
    "--num-total", "clips the benchmark annotates, for the 'annotated' rules (default: the benchmark's)", "N"
)
ALLOW_MISSING_WORDS = options.Flag(
    "--allow-missing-words",
    "go on when query words are outside the store's word table and no word2vec file is available",
    switch=True,
)
LOGMEL_PADDING = options.Flag(
    "--logmel-padding",
    "pad short clips with 0 dB as the reference (zero_db, default) or with the clip's lowest level (floor)",
    choices=("zero_db", "floor"),
)
NO_THUMBNAILS = options.Flag(
    "--no-thumbnails", "do not decode frames of the source videos for the report", switch=True, const=False
)

COMMON_BINDINGS = {
    options.DEVICE: "runtime.device",
    options.BATCH_SIZE: "runtime.batch_size",
    options.NO_PROGRESS: "runtime.progress",
    options.WORD_VECTORS.described(
        "word2vec file for query words outside the store's word table (default: the one the store records)"
    ): "text.word_vectors",
    ALLOW_MISSING_WORDS: "text.allow_missing_words",
    LOGMEL_PADDING: "audio.logmel_padding",
}
JOB_BINDINGS = {
    options.STORE.described("the feature store holding the benchmark videos"): "store",
    options.OUT.described("output folder: metrics.json, config.json, settings.json, report.html"): "out",
    **COMMON_BINDINGS,
    CHUNK_SIZE: "runtime.chunk_size",
    AUDIO_FRAMES: "overrides.audio_frames",
    NO_THUMBNAILS: "report.thumbnails",
}
BINDINGS = {
    "retrieval": {**JOB_BINDINGS, NUM_TOTAL: "overrides.num_total"},
    "localization": JOB_BINDINGS,
}
JOB_HELP = {
    "retrieval": "text-to-clip retrieval: R@1/5/10, median and mean rank, reference and strict protocols",
    "localization": "ordered step localisation: recall (CrossTask, Mining YouTube)",
}


def add_job_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    from mcn.eval.config import PRESETS

    parser.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="step-N folders, RUN folders (their latest step) or released MCN .pth files",
    )
    parser.add_argument(
        "--benchmark",
        nargs="+",
        required=True,
        metavar="DEF",
        help="benchmark definitions (STORE/benchmarks/<name>.json, written by `mcn eval prepare`)",
    )
    options.add_preset_and_set(parser, PRESETS, "default")
    options.add_flags(parser, BINDINGS[kind], required=(options.STORE, options.OUT))


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "similarity",
        help="a (queries x gallery) float .npy matrix whose row i matches column i (rows = the clips present)",
    )
    parser.add_argument(
        "--benchmark",
        required=True,
        metavar="NAME|DEF",
        help="youcook2, msrvtt, generic, or a benchmark definition (.json): whose protocol settings to use",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="reference", help="default: reference")
    for flag in (NUM_TOTAL, CHUNK_SIZE):
        parser.add_argument(flag.name, type=int, metavar=flag.metavar, help=flag.help)


def add_job_parsers(sub) -> None:
    """The ``retrieval``, ``localization`` and ``score`` actions."""
    for kind, help_ in JOB_HELP.items():
        add_job_arguments(sub.add_parser(kind, help=help_, epilog=EPILOG, formatter_class=_FORMATTER), kind)
    add_score_arguments(
        sub.add_parser(
            "score",
            help="score a similarity matrix you bring: prints the metrics JSON",
            epilog=EPILOG,
            formatter_class=_FORMATTER,
        )
    )


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    from mcn.eval.config import ADAPTERS

    parser.add_argument("benchmark", choices=ADAPTERS)
    parser.add_argument(
        "--annotations",
        nargs="+",
        required=True,
        help="youcook2: the trainval JSON; msrvtt: the JSFusion test CSV; crosstask: tasks_primary.txt and the "
        "annotations folder; mining_youtube: the folder of per-video segment files; generic: a clip list "
        ".csv, a localisation .json or a definition",
    )
    parser.add_argument(
        "--videos", required=True, help="folder with the benchmark videos, named <video_id>.<ext>"
    )
    parser.add_argument(
        "--out", required=True, help="the store to write (definition and manifest: OUT/benchmarks/)"
    )
    parser.add_argument("--split", default="validation", help="YouCook2 subset (default: validation)")
    parser.add_argument(
        "--frame-rate", type=float, help="Mining YouTube: annotation times are frames at this rate"
    )
    parser.add_argument(
        "--video-list",
        help="CrossTask: only these (task, video) pairs, e.g. the release's videos_val.csv (rows task,video,url)",
    )
    parser.add_argument(
        "--audio-frames",
        type=int,
        help="generic clip lists: log-mel frames per clip (required); official benchmarks: replaces theirs",
    )
    parser.add_argument(
        "--score-normalisation",
        choices=("none", "log_softmax"),
        help="generic localisation JSON without one: how step scores become decoding costs",
    )


def prepare_config(args: argparse.Namespace):  # -> PrepareConfig
    from mcn.eval.config import PrepareConfig

    annotations, video_list = tuple(args.annotations), args.video_list
    if args.benchmark == "crosstask" and len(annotations) == 3 and video_list is None:
        logger.warning("a third --annotations path is deprecated and will be removed; use --video-list")
        annotations, video_list = annotations[:2], annotations[2]
    return PrepareConfig(
        benchmark=args.benchmark,
        annotations=annotations,
        videos=args.videos,
        out=args.out,
        split=args.split,
        frame_rate=args.frame_rate,
        video_list=video_list,
        audio_frames=args.audio_frames,
        score_normalisation=args.score_normalisation,
    )


def build_eval_config(args: argparse.Namespace):  # -> EvalConfig
    from mcn.eval.config import PRESETS

    fixed = {"kind": args.action, "checkpoints": tuple(args.checkpoint), "benchmarks": tuple(args.benchmark)}
    return options.build_config(PRESETS, args, BINDINGS[args.action], fixed=fixed)


def load_similarity(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise MCNError(f"similarity matrix {path} does not exist")
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise MCNError(f"{path}: not a .npy array ({error})") from None
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise MCNError(
            f"{path}: expected a 2-D numeric array (queries x gallery), got {getattr(matrix, 'shape', '?')}"
        )
    return matrix


def score(args: argparse.Namespace) -> dict:
    """The metrics of ``mcn eval score``: the eval job's :func:`mcn.eval.retrieval.protocol_metrics`."""
    from mcn.eval import benchmarks, protocols, retrieval

    num_total, chunk_size = args.num_total, args.chunk_size or retrieval.DEFAULT_CHUNK
    if chunk_size < 1 or (num_total is not None and num_total < 1):
        raise MCNError("--num-total and --chunk-size must be >= 1")
    if args.benchmark in protocols.RETRIEVAL:
        protocol = protocols.RETRIEVAL[args.benchmark]().protocol(args.protocol)
        num_total = num_total or protocols.ANNOTATED_CLIPS[args.benchmark]
    elif args.benchmark == "generic":
        protocol = protocols.ROWS if args.protocol == "reference" else protocols.STRICT
    else:
        bench = benchmarks.load_benchmark(args.benchmark)
        if not isinstance(bench, benchmarks.RetrievalBenchmark):
            raise MCNError(f"{args.benchmark} is not a retrieval benchmark definition")
        protocol, num_total = bench.settings.protocol(args.protocol), num_total or len(bench.clips)
    matrix = load_similarity(args.similarity)
    logger.info("%s: %s protocol, %d x %d matrix", args.benchmark, args.protocol, *matrix.shape)
    return retrieval.score_similarity(matrix, protocol, num_total, chunk_size)


def run(args: argparse.Namespace) -> int:
    """``retrieval``, ``localization`` or ``score``."""
    if args.action == "score":
        print(json.dumps(score(args), indent=2))
        return 0
    from mcn.eval.jobs import run_eval

    config = build_eval_config(args)
    run_eval(config)
    out = Path(config.out)
    print(f"\nmetrics: {out / 'metrics.json'}  report: {out / 'report.html'}")
    return 0
