"""``mcn sample-data``: write the narrated sample corpus (:mod:`mcn.sample.corpus`) into a folder.

The corpus config starts from ``--preset``; ``--num-videos``, ``--seed`` and then ``--set key=value`` items are
applied to it (:mod:`mcn.options`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcn import options
from mcn.sample.config import PRESETS
from mcn.sample.corpus import generate_corpus

DESCRIPTION = "Generate the narrated sample corpus: synthetic instructional videos, captions and benchmarks."
EPILOG = """examples:
  mcn sample-data corpus/                      # 40 videos (about 10 min of video), seed 0
  mcn sample-data corpus/ --num-videos 8 --seed 3 --preset tiny
  mcn sample-data corpus/ --num-videos 128 --preset tiny_plain   # what a short CPU training run learns from
  mcn sample-data corpus/ --set flaws.corrupt_fraction=0 --set heldout_video_fraction=0.3
  mcn sample-data corpus/ --overwrite          # regenerate into an existing corpus folder
"""

NUM_WORKERS = options.Flag(
    "--num-workers", "videos encoded at once (default: 2)", "N", deprecated=("--workers",)
)
BINDINGS = {
    options.NUM_VIDEOS.described("number of videos (default: the preset's, 40; at least 4)"): "num_videos",
    options.SEED.described("random seed; the same seed gives the same corpus (default: 0)"): "seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created; must be empty unless --overwrite)")
    options.add_preset_and_set(parser, PRESETS, "default")
    options.add_flags(parser, BINDINGS)
    # how the corpus is written, not what it holds: not part of the saved config
    options.add_launch_flag(parser, NUM_WORKERS, "num_workers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true", help="replace a sample corpus already in OUT")


def run(args: argparse.Namespace) -> int:
    config = options.build_config(PRESETS, args, BINDINGS)
    summary = generate_corpus(
        args.out, config.num_videos, config.seed, config, args.num_workers, args.overwrite
    )
    print(
        f"wrote {summary.num_videos} videos ({summary.num_train} train, {summary.num_heldout} held-out, "
        f"{summary.total_seconds / 60:.1f} min of video) to {summary.out_dir} in {summary.seconds_taken:.1f} s"
    )
    return 0
