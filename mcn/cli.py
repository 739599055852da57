"""The ``mcn`` command: one subcommand per job; each subcommand's module builds its own parser lazily.

Every subcommand module exposes ``DESCRIPTION`` (one line), ``EPILOG`` (examples), ``add_arguments(parser)``
and ``run(args) -> int``. A problem the user can fix (:class:`mcn.errors.MCNError`) is printed as one line with
exit status 2; so is a full disk. Anything else is a bug and shows its traceback. Ctrl-C is one line and exit
status 130; a second Ctrl-C while the job cleans up is ignored, and so is one that comes after the subcommand
has returned (its work is done: the exit status stays its own). Diagnostics go through ``logging`` (level from
``$MCN_LOG_LEVEL``, default INFO); ``MCN_DEBUG=1`` also shows tracebacks of MCNErrors.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys

from mcn.errors import MCNError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mcn.demo", "sample corpus -> Ray extraction -> training -> zero-shot retrieval, on CPU"),
    "sample-data": ("mcn.sample.cli", "generate the narrated sample corpus of instructional videos"),
    "extract": ("mcn.pipeline.cli", "run the Ray feature-extraction job into a sharded store"),
    "store": ("mcn.pipeline.store_cli", "inspect, verify and export a feature store"),
    "train": ("mcn.train.cli", "train MCN on a feature store (or convert checkpoints)"),
    "eval": ("mcn.zero_shot", "zero-shot retrieval and step localisation: prepare, score, report"),
    "search": ("mcn.eval.search", "search a store's videos and moments by text"),
}
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _top_level_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="mcn",
        description="Multimodal Clustering Networks: learn a joint video-audio-text space from narrated videos.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"subcommands:\n{lines}\n\nexamples:\n  mcn demo\n  mcn sample-data corpus/ --num-videos 40\n"
        "  mcn extract corpus/ --out store/\n  mcn <subcommand> --help",
    )
    parser.add_argument("--version", action="version", version=f"mcn {__import__('mcn').__version__}")
    parser.add_argument(
        "subcommand",
        choices=sorted(SUBCOMMANDS),
        metavar="SUBCOMMAND",
        help="one of: " + ", ".join(SUBCOMMANDS),
    )
    return parser


def build_subcommand_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"mcn {name}",
        description=getattr(module, "DESCRIPTION", SUBCOMMANDS[name][1]),
        epilog=getattr(module, "EPILOG", None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def configure_logging() -> None:
    """One line per record on stderr; ``$MCN_LOG_LEVEL`` (DEBUG, INFO, WARNING, ...) sets the level of mcn's own
    loggers. Other libraries' loggers report warnings and errors only (gensim logs every file it loads)."""
    level = os.environ.get("MCN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mcn").setLevel(level if isinstance(logging.getLevelName(level), int) else "INFO")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; ``argv`` None means this process is the ``mcn`` program (its arguments, its signals)."""
    is_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    if not argv or argv[0].startswith("-") or argv[0] not in SUBCOMMANDS:
        _top_level_parser().parse_args(argv[:1] if argv else ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    try:
        parser, module = build_subcommand_parser(
            name
        )  # imports the job's libraries: Ctrl-C may land here too
        code = int(module.run(parser.parse_args(rest)) or 0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C during clean-up prints no traceback
        print(f"mcn {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except MCNError as error:
        if os.environ.get("MCN_DEBUG"):
            raise
        print(f"mcn {name}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in OUT_OF_SPACE or os.environ.get("MCN_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"mcn {name}: error: no space left on the device{where}; free some and rerun", file=sys.stderr)
        return 2
    if is_program:  # the work is done; what is left is the interpreter's exit (Ray, thread pools)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
