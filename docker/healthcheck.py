"""The image's HEALTHCHECK: exit 0 when healthy.

A container that runs no Ray node (a one-shot job: extraction driver, training, evaluation) has nothing
long-running to check and is healthy. A Ray node started with `ray start` must answer Ray's health endpoints:
every node its raylet's (through the dashboard agent), a head also the GCS's (through the dashboard, which
serves the job API that `ray job submit` talks to). Only the standard library: this runs every 30 s.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

RAYLET_HEALTH = "http://127.0.0.1:52365/api/local_raylet_healthz"
GCS_HEALTH = "http://127.0.0.1:8265/api/gcs_healthz"
PROC = Path("/proc")


def ray_start_commands() -> list[list[str]]:
    """The argument lists of every `ray start` process in this container."""
    commands = []
    for cmdline in PROC.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # the process ended while we looked
            continue
        names = [Path(arg).name for arg in argv[:2]]  # `ray ...`, or `python .../ray ...` from its shebang
        if "ray" in names and argv[names.index("ray") + 1 : names.index("ray") + 2] == ["start"]:
            commands.append(argv)
    return commands


def answers_success(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200 and b"success" in response.read()
    except OSError:
        return False


def main() -> int:
    commands = ray_start_commands()
    if not commands:
        return 0
    urls = [RAYLET_HEALTH]
    if any("--head" in argv for argv in commands):
        urls.append(GCS_HEALTH)
    unhealthy = [url for url in urls if not answers_success(url)]
    for url in unhealthy:
        print(f"unhealthy: {url} did not answer 'success'", file=sys.stderr)
    return 1 if unhealthy else 0


if __name__ == "__main__":
    sys.exit(main())
