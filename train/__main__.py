"""``python -m mcn.train`` (e.g. under ``torchrun --nproc-per-node N -m mcn.train --store S --out RUN``): ``mcn train``."""

import sys

from mcn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
