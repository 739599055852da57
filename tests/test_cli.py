"""Smoke tests of the `mcn` command: every subcommand has --help with examples; bad arguments give one line."""

import errno
import os
import signal
import subprocess
import sys
import types
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


@pytest.fixture
def failing_subcommand(monkeypatch):
    """`mcn store` replaced by a module whose run raises the given exception."""

    def install(error: BaseException):
        module = types.ModuleType("fake_store_cli")
        module.add_arguments = lambda parser: None
        module.run = lambda args: (_ for _ in ()).throw(error)
        monkeypatch.setitem(sys.modules, "fake_store_cli", module)
        monkeypatch.setitem(SUBCOMMANDS, "store", ("fake_store_cli", "fake"))

    return install


def test_a_full_disk_is_one_line_and_exit_2(failing_subcommand, capsys, monkeypatch):
    monkeypatch.delenv("MCN_DEBUG", raising=False)
    for code in (errno.ENOSPC, errno.EDQUOT):
        failing_subcommand(OSError(code, os.strerror(code)))
        assert main(["store"]) == 2
        assert capsys.readouterr().err.strip().endswith("no space left on the device; free some and rerun")


def test_other_errors_are_bugs_and_keep_their_traceback(failing_subcommand, monkeypatch):
    monkeypatch.delenv("MCN_DEBUG", raising=False)
    for error in (ValueError("a bug"), OSError(errno.EACCES, "Permission denied")):
        failing_subcommand(error)
        with pytest.raises(type(error)):
            main(["store"])


def test_ctrl_c_is_one_line_and_exit_130(failing_subcommand, capsys):
    previous = signal.getsignal(signal.SIGINT)
    try:
        failing_subcommand(KeyboardInterrupt())
        assert main(["store"]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "a second Ctrl-C during clean-up is ignored"
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.strip() == "mcn store: interrupted; rerun the same command to resume"


def test_ctrl_c_while_the_subcommand_loads_is_one_line_too(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt  # the subcommand's imports (torch, Ray) take seconds

    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr("mcn.cli.build_subcommand_parser", interrupted)
    try:
        assert main(["extract", "x", "--out", "y"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "interrupted" in capsys.readouterr().err


def test_third_party_info_logs_stay_quiet(tmp_path):
    code = (
        "import logging, mcn.cli; mcn.cli.configure_logging(); "
        "logging.getLogger('gensim').info('noise'); logging.getLogger('mcn.pipeline').info('ours')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "noise" not in result.stderr and "INFO mcn.pipeline: ours" in result.stderr
