"""``mcn train``: train MCN on a feature store (one process, torchrun or Ray Train), or convert checkpoints.

The config starts from ``--preset`` (with ``--resume``, from the run's saved ``config.json``); the flags of the
shared vocabulary (:mod:`mcn.options`) and then ``--set section.key=value`` items are applied to it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mcn import options, storage
from mcn.configs import config_from_dict
from mcn.errors import MCNError
from mcn.train import config as presets
from mcn.train import model as model_presets
from mcn.train.config import PRECISIONS, TrainConfig

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Train MCN on a feature store made by `mcn extract`, or convert checkpoints to/from the reference format."
)
EPILOG = """examples:
  mcn train --store store/ --out runs/demo --preset demo_cpu
  mcn train --store store/ --out runs/mcn --preset reference --precision bf16
  mcn train --store store/ --out runs/mcn --set optim.lr=3e-4 --set kmeans.fit_every=10
  mcn train --store store/ --out runs/mcn --resume                 # continue a stopped run
  torchrun --nproc-per-node 4 -m mcn.train --store store/ --out runs/mcn
  mcn train --ray --num-workers 4 --store store/ --out runs/mcn    # Ray Train (local Ray, or --address)
  mcn train convert-checkpoint runs/mcn model.pth --to reference
  mcn train convert-checkpoint MCN_release.pth runs/imported --to mcn
"""


def _store_folder(text: str) -> str:
    """A local store as an absolute path, an object-store URL as it is (either must exist)."""
    if not storage.is_dir(text):
        raise ValueError("does not exist; make one with `mcn extract VIDEOS --out STORE`")
    return str(storage.join(text)) if storage.is_remote(text) else str(Path(text).resolve())


def _model_preset(name: str):  # -> ModelConfig
    return model_presets.PRESETS[name]()


# flag -> dotted config path; applied to the preset (or to the saved config when resuming), before --set
BINDINGS = {
    options.Flag(
        "--model", "model size preset (default: the recipe's)", choices=tuple(sorted(model_presets.PRESETS))
    ): ("model", _model_preset),
    options.STORE: ("data.store", _store_folder),
    options.DEVICE.described(
        "auto (a GPU when there is one), cpu, cuda (each process's local GPU) or cuda:N "
        "(default: the preset's: auto for reference, cpu for the CPU recipes)"
    ): "device",
    options.SEED: "seed",
    options.Flag("--epochs", "passes over the store", "N"): "schedule.epochs",
    options.MAX_STEPS.described("stop after this many steps (the cosine ends there)"): "schedule.max_steps",
    options.Flag("--warmup-steps", "steps of linear learning-rate warm-up", "N"): "schedule.warmup_steps",
    options.BATCH_VIDEOS: "data.batch_videos",
    options.NUM_CLIPS: "data.num_clips",
    options.NUM_LOADER_WORKERS: "data.num_workers",
    options.Flag("--lr", "Adam learning rate", "LR"): "optim.lr",
    options.Flag("--grad-clip", "max gradient norm (0 = off)", "NORM"): "optim.grad_clip",
    options.Flag(
        "--precision", "autocast dtype (fp16 adds loss scaling; GPUs only)", choices=PRECISIONS
    ): "precision.dtype",
    options.Flag("--compile", "torch.compile the model", switch=True): "precision.compile",
    options.Flag("--num-clusters", "k-means clusters K", "K"): "kmeans.num_clusters",
    options.Flag("--checkpoint-every", "steps between checkpoints", "N"): "checkpoint.every_steps",
    options.Flag("--keep-last", "checkpoints to keep", "N"): "checkpoint.keep_last",
    options.NO_PROGRESS: "logging.progress",
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

    options.add_preset_and_set(parser, presets.PRESETS, "reference")
    options.add_flags(parser, BINDINGS)
    # how the run is launched, not what it trains: these are not part of the saved config
    parser.add_argument(
        options.OUT.name,
        metavar="RUN",
        help="run folder: config.json, metrics, TensorBoard, checkpoints/",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint, with its saved config (flags still apply)",
    )
    parser.add_argument(
        "--ray", action="store_true", help="run the training loop under Ray Train's TorchTrainer"
    )
    parser.add_argument(
        options.ADDRESS.name, metavar=options.ADDRESS.metavar, help=f"with --ray: {options.ADDRESS.help}"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        help="with --ray: Ray Train worker processes, one GPU each if any (default: 1)",
    )


def _saved_config(run_dir: str) -> TrainConfig | None:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MCNError(f"{path} is not valid JSON; restore it or start a new run in another --out") from None
    logger.info("resuming with the config saved in %s (the preset is not used)", path)
    return config_from_dict(TrainConfig, data)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (or the saved config of a resumed run) with the bound flags, then ``--set`` items, applied."""
    base = _saved_config(args.out) if args.resume and args.out else None
    config = options.build_config(presets.PRESETS, args, BINDINGS, base=base)
    if not config.data.store:
        raise MCNError("no feature store given; pass --store STORE (made by `mcn extract`)")
    return config


def _train(config: TrainConfig, args: argparse.Namespace) -> dict | None:
    """Train in this process (alone or as one torchrun rank) or on Ray Train; the summary on the first rank."""
    if not args.ray:
        if args.num_workers is not None or args.address is not None:
            raise MCNError(
                "--num-workers and --address are Ray Train settings: add --ray (with torchrun, the process "
                "count is torchrun's --nproc-per-node; loader processes are --num-loader-workers)"
            )
        from mcn.train.distributed import close_distributed, init_distributed
        from mcn.train.trainer import train

        info = init_distributed(config.device)
        try:
            summary = train(config, args.out, args.resume, info)
        finally:
            close_distributed()
        return summary if info.is_main else None
    from mcn.train.ray_train import train_with_ray

    num_workers = 1 if args.num_workers is None else args.num_workers
    return train_with_ray(config, args.out, args.resume, num_workers, args.address)


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
    if storage.is_remote(args.out):
        raise MCNError(
            f"--out {args.out}: the run folder must be a local or shared folder (checkpoints are published "
            "with renames); only --store may be a URL"
        )
    summary = _train(build_config(args), args)
    if summary is not None:
        print(
            f"trained {summary['steps']} steps, final loss {summary['loss']:.4f}; checkpoint {summary['checkpoint']}"
        )
    return 0
