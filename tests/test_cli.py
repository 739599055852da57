"""Smoke tests of the `mcn` command: every subcommand has --help with examples; bad arguments give one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcn.cli import SUBCOMMANDS, build_subcommand_parser, main

MCN = [sys.executable, "-m", "mcn"]


def run_mcn(*args, cwd=None):
    env = {**os.environ, "MCN_DEBUG": ""}
    return subprocess.run([*MCN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_top_level_help_lists_every_subcommand():
    result = run_mcn("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


def test_unknown_subcommand_is_one_line_error():
    result = run_mcn("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help_with_examples(name, capsys):
    parser, module = build_subcommand_parser(name)
    assert module.EPILOG and "mcn" in module.EPILOG, f"`mcn {name} --help` shows no examples"
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out.lower()


def test_missing_input_is_one_clear_line(tmp_path):
    result = run_mcn("extract", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "store"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and "no-such-folder" in lines[0], result.stderr


def test_store_info_on_a_non_store_is_one_clear_line(tmp_path):
    result = run_mcn("store", "info", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(tmp_path) in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "mcn"
    assert script.exists(), "the `mcn` console script is missing: reinstall with pip install -e ."
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("mcn ")
