"""The command line's one vocabulary: a setting has the same flag in every subcommand that has it.

Each subcommand starts from a preset of its job config (``--preset``), binds flags of this vocabulary to dotted
paths of that config (:func:`add_flags`) and accepts ``--set section.key=value`` for every other field
(:func:`add_preset_and_set`). :func:`build_config` applies the flags given, then the ``--set`` items, to the
preset, parsing each value through the field's type hint (:func:`mcn.configs.apply_overrides`). Old spellings
stay accepted for one release, hidden from ``--help``, with a warning naming the new flag.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mcn.configs import apply_overrides, parse_assignments
from mcn.errors import MCNError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flag:
    """One command-line spelling of a setting. ``switch`` flags take no value and set ``const``."""

    name: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    const: Any = True
    deprecated: tuple[str, ...] = ()  # old spellings, accepted with a warning

    def described(self, help: str) -> Flag:
        """The same flag with a subcommand's own help text."""
        return replace(self, help=help)


# ---- the vocabulary: every subcommand picks from these --------------------------------------------------------
OUT = Flag("--out", "output folder", "DIR")
STORE = Flag("--store", "feature store folder (made by `mcn extract`)", "STORE")
DEVICE = Flag("--device", "auto (a GPU when there is one), cpu, cuda or cuda:N (default: auto)", "DEVICE")
SEED = Flag("--seed", "random seed", "N")
NO_PROGRESS = Flag("--no-progress", "no progress bar (logs and CI)", switch=True, const=False)
WEIGHTS_2D = Flag(
    "--weights-2d",
    "torchvision ResNet-152 state dict (.pth); unset = random initialisation",
    "PTH",
    deprecated=("--resnet152-weights",),
)
WEIGHTS_3D = Flag(
    "--weights-3d",
    "resnext-101-kinetics.pth; unset = random initialisation",
    "PTH",
    deprecated=("--resnext101-weights",),
)
DOWNLOAD_WEIGHTS_2D = Flag(
    "--download-weights-2d",
    "let torchvision download its ImageNet ResNet-152 weights (needs a network)",
    switch=True,
)
MODEL_2D = Flag("--model-2d", "registered 2D model (resnet152, resnet152-tiny)", "NAME")
MODEL_3D = Flag("--model-3d", "registered 3D model (resnext101, resnext101-tiny)", "NAME")
WORD_VECTORS = Flag("--word-vectors", "word2vec .bin or text vectors", "FILE")
DECODE_BACKEND = Flag(
    "--decode-backend",
    "frame decoder: decord (default) or one ffmpeg process with the reference's fps/scale/crop filters",
    choices=("decord", "ffmpeg"),
)
BATCH_2D = Flag("--batch-2d", "frames per 2D forward pass", "N")
BATCH_3D = Flag("--batch-3d", "16-frame clips per 3D forward pass", "N")
ADDRESS = Flag("--address", "join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)", "ADDR")
NUM_CPUS = Flag("--num-cpus", "CPUs of the local Ray (default: every core)", "N", deprecated=("--cpus",))
NUM_GPUS = Flag("--num-gpus", "GPUs of the local Ray (default: detected)", "N")
NUM_VIDEOS = Flag("--num-videos", "videos to generate", "N", deprecated=("--videos",))
NUM_CLIPS = Flag("--num-clips", "clips drawn per video", "N", deprecated=("--clips-per-video",))
NUM_LOADER_WORKERS = Flag(
    "--num-loader-workers", "data-loader processes per rank", "N", deprecated=("--loader-workers",)
)
BATCH_VIDEOS = Flag("--batch-videos", "global batch in videos (each gives --num-clips clips)", "N")
BATCH_SIZE = Flag("--batch-size", "clips per model call", "N")
MAX_STEPS = Flag("--max-steps", "stop after this many training steps", "N", deprecated=("--train-steps",))


def _dest(path: str) -> str:
    return f"config:{path}"


class _DeprecatedFlag(argparse.Action):
    """An old spelling: warns, then stores like the flag that replaced it."""

    def __init__(self, option_strings, dest, replacement: str, switch: bool, const: Any = None, **kwargs):
        super().__init__(option_strings, dest, nargs=0 if switch else None, const=const, **kwargs)
        self.replacement, self.switch = replacement, switch

    def __call__(self, parser, namespace, values, option_string=None):
        logger.warning("%s is deprecated and will be removed; use %s", option_string, self.replacement)
        setattr(namespace, self.dest, self.const if self.switch else values)


Target = str | tuple[str, Callable[[str], Any]]


def add_flags(
    parser: argparse.ArgumentParser | Any, bindings: Mapping[Flag, Target], required: tuple[Flag, ...] = ()
) -> None:
    """Add each flag, bound to a dotted config path (or ``(path, convert)`` to transform the value first)."""
    for flag, target in bindings.items():
        path = target if isinstance(target, str) else target[0]
        kwargs: dict[str, Any] = {"dest": _dest(path), "default": None, "help": flag.help}
        if flag.name in {f.name for f in required}:
            kwargs["required"] = True
        if flag.switch:
            parser.add_argument(flag.name, action="store_const", const=flag.const, **kwargs)
        else:
            parser.add_argument(flag.name, metavar=flag.metavar, choices=flag.choices, **kwargs)
        for old in flag.deprecated:
            parser.add_argument(
                old,
                action=_DeprecatedFlag,
                replacement=flag.name,
                switch=flag.switch,
                const=flag.const if flag.switch else None,
                dest=_dest(path),
                default=None,
                help=argparse.SUPPRESS,
            )


def add_preset_and_set(
    parser: argparse.ArgumentParser | Any, presets: Mapping[str, Callable], default: str
) -> None:
    """``--preset NAME`` (the starting config) and ``--set KEY=VALUE`` (any field, repeatable)."""
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default=default,
        help=f"starting config (default: {default}); see each preset's docstring",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, e.g. --set optim.lr=3e-4 (repeatable; applied after the other flags)",
    )


def overrides_from(args: argparse.Namespace, bindings: Mapping[Flag, Target]) -> dict[str, Any]:
    """The dotted-path overrides the command line gives: bound flags first, then ``--set`` items."""
    overrides: dict[str, Any] = {}
    for flag, target in bindings.items():
        path, convert = (target, None) if isinstance(target, str) else target
        value = getattr(args, _dest(path), None)
        if value is None:
            continue
        if convert is not None:
            try:
                value = convert(value)
            except ValueError as error:
                raise MCNError(f"{flag.name} {value!r}: {error}") from None
        overrides[path] = value
    overrides.update(parse_assignments(getattr(args, "set", None)))
    return overrides


def build_config(
    presets: Mapping[str, Callable[[], Any]],
    args: argparse.Namespace,
    bindings: Mapping[Flag, Target],
    base: Any = None,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """``base`` (default: the ``--preset``) with ``fixed`` paths, the bound flags and ``--set`` applied."""
    config = presets[args.preset]() if base is None else base
    return apply_overrides(config, {**(fixed or {}), **overrides_from(args, bindings)})


def megabytes(text: str) -> int:
    """A size in MB on the command line -> bytes."""
    return int(text) << 20
