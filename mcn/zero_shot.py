"""``mcn eval``: the evaluation subcommands, with ``prepare`` composed from two stages.

``retrieval``, ``localization`` and ``score`` are :mod:`mcn.eval.cli`'s. ``prepare`` runs the evaluation side
(:func:`mcn.eval.prepare.run_prepare`: the benchmark definition and an extraction manifest) and then the ordinary
extraction job over that manifest into the benchmark store, with the flags, ``--preset`` and ``--set`` of
``mcn extract``. The composition lives here, above both stages, so that evaluation never imports the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses

from mcn import options
from mcn.eval import cli as eval_cli

DESCRIPTION = eval_cli.DESCRIPTION
EPILOG = eval_cli.EPILOG
PREPARE_DESCRIPTION = (
    "Official annotations + a folder of videos -> OUT/benchmarks/<name>.json (the definition, with the "
    "benchmark's protocol settings) and <name>-inputs.csv (the extraction manifest); then the extraction job "
    "over the manifest into the store OUT. --preset, --set and the extraction flags are those of `mcn extract` "
    "(--preset reference: fp32 everywhere, as the released features). Rerunning resumes the extraction."
)


def _extraction_bindings() -> dict:
    from mcn.pipeline.cli import BINDINGS

    return {flag: path for flag, path in BINDINGS.items() if flag.name != options.OUT.name}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mcn.pipeline.config import PRESETS

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = sub.add_parser(
        "prepare",
        help="official annotations + videos -> benchmark definition, manifest and store",
        description=PREPARE_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_cli.add_prepare_arguments(prepare)
    prepare.add_argument(
        "--no-extract",
        action="store_true",
        help="write the definition and the manifest only (extract later: mcn extract MANIFEST --out OUT)",
    )
    options.add_preset_and_set(prepare, PRESETS, "default")
    options.add_flags(prepare, _extraction_bindings())
    eval_cli.add_job_parsers(sub)


def run(args: argparse.Namespace) -> int:
    if args.action != "prepare":
        return eval_cli.run(args)
    from mcn.eval.prepare import run_prepare
    from mcn.pipeline.config import PRESETS

    config = eval_cli.prepare_config(args)
    extraction = options.build_config(PRESETS, args, _extraction_bindings(), fixed={"out": config.out})
    prepared = run_prepare(config)
    print(
        f"benchmark definition: {prepared.definition}\nextraction manifest: {prepared.manifest} "
        f"({prepared.num_found} videos found, {prepared.num_missing} missing)"
    )
    if args.no_extract:
        return 0
    from mcn.pipeline.job import run_extraction

    summary = run_extraction(dataclasses.replace(extraction, input=str(prepared.manifest)))
    print(
        f"store: {config.out} ({summary['extracted']} videos extracted, {summary['skipped_already_done']} "
        f"already done, {summary['failed']} failed)"
    )
    return 0
