"""Check command lines that run mcn, torchrun or ray with the real parser of the tool they call (the `mcn`
subcommand parsers, torchrun's argparse, Ray's click commands), so a flag that does not exist fails.

Shared by the tests of the container recipes (tests/test_docker.py) and of the documented commands
(tests/test_docs_commands.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from torch.distributed.run import get_args_parser as torchrun_parser

from mcn.cli import SUBCOMMANDS, build_subcommand_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
TORCHRUN_SCRIPT = DOCKER / "cluster" / "torchrun-multinode.sh"


def check_mcn(argv: list[str]) -> None:
    """``mcn ARGV``: the subcommand exists, its parser accepts ARGV, and ARGV + --help prints help."""
    if argv in (["--version"], ["--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        return
    assert argv and argv[0] in SUBCOMMANDS, f"not an mcn subcommand: mcn {shlex.join(argv)}"
    parser, _ = build_subcommand_parser(argv[0])
    try:
        parser.parse_args(argv[1:])
    except SystemExit as error:
        pytest.fail(f"`mcn {shlex.join(argv)}` is rejected by its parser (exit {error.code})")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0, f"`mcn {shlex.join(argv)} --help` failed"


def check_torchrun(argv: list[str]) -> None:
    """``torchrun ARGV``: torchrun's own parser accepts it, it runs ``-m mcn.train`` and mcn train accepts the rest."""
    try:
        args = torchrun_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"torchrun rejects: {shlex.join(argv)}")
    assert args.module and args.training_script == "mcn.train", f"torchrun must run -m mcn.train: {argv}"
    assert importlib.util.find_spec("mcn.train.__main__") is not None, (
        "python -m mcn.train needs train/__main__.py"
    )
    check_mcn(["train", *args.training_script_args])


def check_ray(argv: list[str]) -> None:
    """``ray ARGV`` parsed by Ray's click commands; a submitted job's entry point is checked in turn."""
    from ray.scripts.scripts import cli

    command: click.Command = cli
    names = ["ray"]
    rest = list(argv)
    while isinstance(command, click.Group):
        assert rest, f"ray command incomplete: {argv}"
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"no such ray command: ray {shlex.join(argv)}"
        command, rest = sub, rest[1:]
        names.append(sub.name)
    try:
        context = command.make_context(" ".join(names), list(rest))
    except click.ClickException as error:
        pytest.fail(f"`ray {shlex.join(argv)}` rejected: {error.format_message()}")
    if names[1:] == ["job", "submit"]:
        entrypoint = list(context.params["entrypoint"])
        assert entrypoint[:1] == ["mcn"], f"the job must run mcn: {entrypoint}"
        check_mcn(entrypoint[1:])


def check_command(tokens: list[str]) -> str | None:
    """Check a command line that runs mcn, torchrun or ray; returns which one it was (None: not ours)."""
    if tokens[:1] == ["mcn"]:
        check_mcn(tokens[1:])
        return "mcn"
    if tokens[:3] == ["python", "-m", "mcn"]:
        check_mcn(tokens[3:])
        return "mcn"
    if tokens[:1] == ["torchrun"]:
        check_torchrun(tokens[1:])
        return "torchrun"
    if tokens[:1] == ["ray"]:
        check_ray(tokens[1:])
        return "ray job submit" if tokens[1:3] == ["job", "submit"] else "ray"
    return None


def expand_variables(text: str) -> str:
    """Shell variables and substitutions become a placeholder word (paths and values are not checked)."""
    return re.sub(r"\$\{[^}]*\}|\$\([^)]*\)|\$[A-Za-z_][A-Za-z0-9_]*", "placeholder", text)


def compose_services(*files: Path) -> dict[str, dict]:
    """The services of Compose files applied in order, as Compose merges them: mappings merge key by key,
    anything else (a command, an entry point) is replaced by the later file's."""

    def merge(base: dict, override: dict) -> dict:
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
        return merged

    services: dict[str, dict] = {}
    for path in files:
        for name, service in yaml.safe_load(path.read_text())["services"].items():
            services[name] = merge(services.get(name, {}), service)
    return services


def service_argv(service: dict, command: list[str] | None = None) -> list[str]:
    """What a service's container runs: its entry point (the image's is `mcn`) and the command."""
    return [
        *service.get("entrypoint", ["mcn"]),
        *(service.get("command", []) if command is None else command),
    ]


def run_torchrun_script(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, list]:
    """Run the multi-node script with stub ``torchrun`` and ``docker`` on PATH; returns the stub's argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.json"
    for name in ("torchrun", "docker"):
        stub = bin_dir / name
        stub.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"json.dump([{name!r}, *sys.argv[1:]], open({str(record)!r}, 'w'))\n"
        )
        stub.chmod(0o755)
    record.unlink(missing_ok=True)
    full_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path), **env}
    result = subprocess.run(
        ["bash", str(TORCHRUN_SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60
    )
    return result, (json.loads(record.read_text()) if record.exists() else [])
