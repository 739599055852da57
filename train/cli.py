"""``mcn train``: train MCN on a feature store (one process, torchrun or Ray Train), or convert checkpoints."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from mcn.configs import config_from_dict
from mcn.errors import MCNError
from mcn.train import config as presets
from mcn.train import model as model_presets
from mcn.train.config import PRECISIONS, TrainConfig

DESCRIPTION = (
    "Train MCN on a feature store made by `mcn extract`, or convert checkpoints to/from the reference format."
)
EPILOG = """examples:
  mcn train --store store/ --out runs/demo --preset demo_cpu
  mcn train --store store/ --out runs/mcn --preset reference --precision bf16
  mcn train --store store/ --out runs/mcn --resume                 # continue a stopped run
  torchrun --nproc-per-node 4 -m mcn.train --store store/ --out runs/mcn
  mcn train --ray --num-workers 4 --store store/ --out runs/mcn    # Ray Train (local Ray, or --address)
  mcn train convert-checkpoint runs/mcn model.pth --to reference
  mcn train convert-checkpoint MCN_release.pth runs/imported --to mcn
"""

# flag -> (config section, field); applied on top of the preset (or of the saved config when resuming)
OVERRIDES = {
    "epochs": ("schedule", "epochs"),
    "max_steps": ("schedule", "max_steps"),
    "warmup_steps": ("schedule", "warmup_steps"),
    "batch_videos": ("data", "batch_videos"),
    "clips_per_video": ("data", "num_clips"),
    "loader_workers": ("data", "num_workers"),
    "lr": ("optim", "lr"),
    "grad_clip": ("optim", "grad_clip"),
    "precision": ("precision", "dtype"),
    "num_clusters": ("kmeans", "num_clusters"),
    "checkpoint_every": ("checkpoint", "every_steps"),
    "keep_last": ("checkpoint", "keep_last"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="[convert-checkpoint]")
    convert = actions.add_parser(
        "convert-checkpoint",
        help="convert between an mcn checkpoint and the reference's plain state dict",
        description="Convert an mcn step folder / run folder to a reference .pth state dict, or back.",
    )
    convert.add_argument("source", help="a step-N folder, a run folder (its latest step) or a reference .pth")
    convert.add_argument("target", help="output .pth (--to reference) or step folder (--to mcn)")
    convert.add_argument(
        "--to", choices=("reference", "mcn"), help="default: mcn for a .pth input, else reference"
    )

    parser.add_argument("--store", help="feature store folder (made by `mcn extract`)")
    parser.add_argument("--out", help="run folder: config.json, metrics, TensorBoard, checkpoints/")
    parser.add_argument(
        "--preset",
        choices=sorted(presets.PRESETS),
        default="reference",
        help="training recipe (default: reference)",
    )
    parser.add_argument(
        "--model", choices=sorted(model_presets.PRESETS), help="model size preset (default: the recipe's)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="default: the recipe's (auto = GPU if any)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (the cosine ends there)")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument(
        "--batch-videos", type=int, help="global batch in videos (each gives --clips-per-video clips)"
    )
    parser.add_argument("--clips-per-video", type=int)
    parser.add_argument("--loader-workers", type=int, help="data-loader processes per rank")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--grad-clip", type=float, help="max gradient norm (0 = off)")
    parser.add_argument("--precision", choices=PRECISIONS, help="autocast dtype (fp16 adds loss scaling)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--num-clusters", type=int, help="k-means clusters K")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--keep-last", type=int, help="checkpoints to keep")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--ray", action="store_true", help="run the training loop under Ray Train's TorchTrainer"
    )
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument(
        "--num-workers", type=int, default=1, help="Ray Train workers (processes; one GPU each if any)"
    )


def _section_replace(config: TrainConfig, section: str, name: str, value) -> TrainConfig:
    return replace(config, **{section: replace(getattr(config, section), **{name: value})})


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (or the saved config of a resumed run) with the flags given on the command line applied."""
    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists():
        config = config_from_dict(TrainConfig, json.loads(saved.read_text()))
    else:
        config = presets.PRESETS[args.preset]()
        if args.model:
            config = replace(config, model=model_presets.PRESETS[args.model]())
    if args.store:
        if not Path(args.store).is_dir():
            raise MCNError(
                f"store {args.store} does not exist; make one with `mcn extract VIDEOS --out STORE`"
            )
        config = _section_replace(config, "data", "store", str(Path(args.store).resolve()))
    for flag, (section, name) in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            config = _section_replace(config, section, name, value)
    if args.compile:
        config = _section_replace(config, "precision", "compile", True)
    if args.no_progress:
        config = _section_replace(config, "logging", "progress", False)
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    if args.device:
        config = replace(config, device=args.device)
    if not config.data.store:
        raise MCNError("no feature store given; pass --store STORE (made by `mcn extract`)")
    return config


def run(args: argparse.Namespace) -> int:
    if args.action == "convert-checkpoint":
        from mcn.train.checkpoint import convert_checkpoint

        direction = convert_checkpoint(args.source, args.target, args.to)
        print(
            f"wrote {args.target} ({'reference state dict' if direction == 'reference' else 'mcn step folder'})"
        )
        return 0
    if not args.out:
        raise MCNError("no run folder given; pass --out RUN")
    config = build_config(args)
    if args.ray:
        from mcn.train.ray_train import train_with_ray

        summary = train_with_ray(config, args.out, args.resume, args.num_workers, args.address)
    else:
        from mcn.train.distributed import close_distributed, init_distributed
        from mcn.train.trainer import train

        info = init_distributed(config.device)
        try:
            summary = train(config, args.out, args.resume, info)
        finally:
            close_distributed()
        if not info.is_main:
            return 0
    print(
        f"trained {summary['steps']} steps, final loss {summary['loss']:.4f}; checkpoint {summary['checkpoint']}"
    )
    return 0
