"""The two pin files agree with pyproject.toml.

requirements.txt (what the image and `make demo` install) pins exactly the project's dependencies with the
extras the image carries and everything they pull in; requirements-dev.txt (added for `make test`) pins exactly
what the `dev` extra pulls in beyond that. Every pin is exact and within pyproject.toml's range. What a
package pulls in is read from the installed packages' metadata, which `make setup` installs from these files,
so the installed versions must be the pinned ones.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "requirements.txt"
DEV = REPO / "requirements-dev.txt"
# The extras the image installs: `mcn sample-data` and `mcn extract --asr` run in it.
IMAGE_EXTRAS = ("sample", "asr")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^=,<>~*;\s]+)$")


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version); fails on anything but ``name==version`` lines."""
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin (name==version): {line}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{path.name}:{number}: {match.group(1)} is pinned twice"
        found[name] = (match.group(1), match.group(2))
    return found


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions these requirement strings install, dependencies included."""
    extras_seen: dict[str, set[str]] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in extras_seen and extras <= extras_seen[name]:
            continue
        extras_seen[name] = extras_seen.get(name, set()) | extras
        try:
            dependencies = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: run `make setup`")
        for text in dependencies:
            dependency = Requirement(text)
            markers = [{"extra": extra} for extra in sorted(extras_seen[name]) or [""]]
            if dependency.marker is None or any(dependency.marker.evaluate(m) for m in markers):
                pending.append(dependency)
    return set(extras_seen)


def runtime_requirements() -> list[str]:
    optional = project()["optional-dependencies"]
    return project()["dependencies"] + [r for extra in IMAGE_EXTRAS for r in optional[extra]]


def test_runtime_pins_are_exactly_what_the_image_s_dependencies_install() -> None:
    pinned, needed = set(pins(RUNTIME)), closure(runtime_requirements())
    assert not needed - pinned, (
        f"pulled in by the runtime dependencies but not pinned: {sorted(needed - pinned)}"
    )
    assert not pinned - needed, (
        f"pinned in requirements.txt but not needed at run time: {sorted(pinned - needed)}"
    )


def test_dev_pins_are_exactly_what_the_dev_extra_adds() -> None:
    runtime = set(pins(RUNTIME))
    pinned, needed = set(pins(DEV)), closure(project()["optional-dependencies"]["dev"]) - runtime
    assert not needed - pinned, f"pulled in by the dev extra but not pinned: {sorted(needed - pinned)}"
    assert not pinned - needed, (
        f"pinned in requirements-dev.txt but not needed by the dev extra: {pinned - needed}"
    )
    assert not runtime & pinned, f"pinned in both files: {sorted(runtime & pinned)}"


@pytest.mark.parametrize("path", [RUNTIME, DEV], ids=lambda p: p.name)
def test_pins_are_within_pyproject_ranges_and_installed(path: Path) -> None:
    declared = [Requirement(text) for text in runtime_requirements()]
    declared += [Requirement(text) for text in project()["optional-dependencies"]["dev"]]
    ranges = {canonicalize_name(r.name): r.specifier for r in declared}
    for name, (written, version) in pins(path).items():
        if name in ranges:
            assert ranges[name].contains(version, prereleases=True), (
                f"{written}=={version} is outside pyproject.toml's {written}{ranges[name]}"
            )
        assert metadata.version(name) == version, (
            f"{written} {metadata.version(name)} is installed, {version} pinned: run `make setup`"
        )
