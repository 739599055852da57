"""``mcn sample-data``: write the narrated sample corpus (:mod:`mcn.sample.corpus`) into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcn.sample.config import PRESETS
from mcn.sample.corpus import generate_corpus

DESCRIPTION = "Generate the narrated sample corpus: synthetic instructional videos, captions and benchmarks."
EPILOG = """examples:
  mcn sample-data corpus/                      # 40 videos (about 10 min of video), seed 0
  mcn sample-data corpus/ --videos 8 --seed 3 --preset tiny
  mcn sample-data corpus/ --videos 128 --preset tiny_plain   # what a short CPU training run learns from
  mcn sample-data corpus/ --overwrite          # regenerate into an existing corpus folder
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--videos", type=int, default=40, help="number of videos (default 40, at least 4)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same corpus"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="corpus preset")
    parser.add_argument("--workers", type=int, default=2, help="videos encoded at once (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a sample corpus already in OUT")


def run(args: argparse.Namespace) -> int:
    config = PRESETS[args.preset]()
    summary = generate_corpus(args.out, args.videos, args.seed, config, args.workers, args.overwrite)
    print(
        f"wrote {summary.num_videos} videos ({summary.num_train} train, {summary.num_heldout} held-out, "
        f"{summary.total_seconds / 60:.1f} min of video) to {summary.out_dir} in {summary.seconds_taken:.1f} s"
    )
    return 0
