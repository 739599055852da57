"""The decode benchmark, the instrument of the decode-speed figures in docs/extraction.md, runs end to end.

Only that it runs and reports every backend and profile step is checked here: timings are never asserted on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from media import make_video

REPO = Path(__file__).resolve().parents[1]


def test_decode_benchmark_reports_each_backend_against_a_bare_decode_and_the_profile(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", seconds=8.0, size=(320, 180), audio=False)
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "extract.py"), "--video", str(video), "--cpu-only", "--quick",
         "--repeats", "1", "--profile"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for backend in ("decord", "ffmpeg", "ffmpeg, fast kernel"):
        line = next(line for line in lines if line.startswith(f"decode  {backend} "))
        assert re.search(
            r"video-s per CPU-s, +[\d.]+ % of the bare decode \(8 2D \+ 192 3D frames\)", line
        ), line
    profile = [
        line for line in lines if line.startswith("profile ") and not line.startswith("profile threads")
    ]
    steps = {line[8:29].strip() for line in profile[1:]}
    assert steps == {"ffmpeg", "ffmpeg, fast kernel", "decord"}
    assert len(profile) == 1 + 6 + 2 + 4 and all(
        re.search(r" [\d.]+ s +[\d.]+ video-s per CPU-s", p) for p in profile[1:]
    )
    threads = {line[16:36].strip(): line for line in lines if line.startswith("profile threads ")}
    assert set(threads) == {
        "bare decode",
        "ffmpeg backend graph",
        "ffmpeg backend (job)",
        "decord, in process",
    }, threads
    # the split found ffmpeg's named decoder and filter threads, and decord's thread beside the main thread
    for run in ("ffmpeg backend graph", "ffmpeg backend (job)"):
        assert re.search(r"decoder [\d.-]+ s, .*filters/decoder [\d.-]+, decoder/all [\d.-]+ %", threads[run])
    assert "this process" in threads["ffmpeg backend (job)"]
    assert re.search(r"decord [\d.-]+ s, .*main \(Python\) [\d.-]+ s", threads["decord, in process"])
    assert re.search(r"the bare decode / decord's thread [\d.-]+ %", threads["decord, in process"])
