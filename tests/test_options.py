"""mcn.options: one flag vocabulary bound to config paths, presets, --set, deprecated spellings."""

import argparse
import logging
from dataclasses import dataclass, field

import pytest

from mcn import options
from mcn.errors import MCNError


@dataclass(frozen=True, kw_only=True)
class Runtime:
    device: str = "auto"
    num_cpus: int | None = None


@dataclass(frozen=True, kw_only=True)
class Job:
    out: str = ""
    runtime: Runtime = field(default_factory=Runtime)
    max_bytes: int = 1 << 30
    progress: bool = True


PRESETS = {"default": Job, "small": lambda: Job(runtime=Runtime(num_cpus=2))}
BINDINGS = {
    options.OUT: "out",
    options.DEVICE: "runtime.device",
    options.NUM_CPUS: "runtime.num_cpus",
    options.Flag("--max-mb", "size", "MB"): ("max_bytes", options.megabytes),
    options.NO_PROGRESS: "progress",
}


def parse(*argv: str) -> Job:
    parser = argparse.ArgumentParser()
    options.add_preset_and_set(parser, PRESETS, "default")
    options.add_flags(parser, BINDINGS, required=(options.OUT,))
    return options.build_config(PRESETS, parser.parse_args(argv), BINDINGS)


def test_flags_then_set_are_applied_to_the_preset():
    job = parse("--out", "o", "--preset", "small", "--device", "cpu", "--max-mb", "2", "--no-progress")
    assert job == Job(out="o", runtime=Runtime(device="cpu", num_cpus=2), max_bytes=2 << 20, progress=False)
    assert parse("--out", "o", "--num-cpus", "3", "--set", "runtime.num_cpus=4").runtime.num_cpus == 4


def test_unset_flags_keep_the_preset():
    assert parse("--out", "o", "--preset", "small") == Job(out="o", runtime=Runtime(num_cpus=2))


def test_deprecated_spelling_works_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        job = parse("--out", "o", "--cpus", "5")
    assert job.runtime.num_cpus == 5
    assert "--cpus is deprecated" in caplog.text and "--num-cpus" in caplog.text


def test_deprecated_spellings_are_hidden_from_help():
    parser = argparse.ArgumentParser()
    options.add_flags(parser, BINDINGS)
    assert "--cpus" not in parser.format_help() and "--num-cpus" in parser.format_help()


def test_bad_values_are_user_errors():
    with pytest.raises(MCNError, match="runtime.num_cpus"):
        parse("--out", "o", "--num-cpus", "many")
    with pytest.raises(MCNError, match="--max-mb"):
        parse("--out", "o", "--max-mb", "big")
    with pytest.raises(SystemExit):  # --out is required
        parse("--device", "cpu")


def test_described_flag_keeps_its_spelling():
    flag = options.OUT.described("store folder")
    assert flag.name == "--out" and flag.help == "store folder" and options.OUT.help != "store folder"
