"""Every Makefile target is run somewhere: `test` and `setup` by CI, `demo` by the demo test, `docker-smoke` by
hand (it needs a Docker engine); the others here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ELSEWHERE = {"setup", "test", "demo", "docker-smoke"}
RUN_HERE = {"lint", "clean", "bench-cpu"}


def targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.M))


def make(*args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_every_target_is_accounted_for():
    assert targets() <= RUN_ELSEWHERE | RUN_HERE, f"a new Makefile target needs a test: {targets()}"


def test_lint_passes():
    result = make("lint")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_clean_removes_what_the_targets_make(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for made in (".venv/bin", "mcn-demo/corpus", ".pytest_cache", ".ruff_cache", "mcn.egg-info"):
        (tmp_path / made).mkdir(parents=True)
    (tmp_path / "keep.txt").write_text("mine")
    result = make("clean", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "keep.txt"]


@pytest.mark.slow
def test_cpu_benchmarks_run_and_print_their_figures():
    result = make("bench-cpu", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "video-s per wall-s" in result.stdout, result.stdout[-3000:]
