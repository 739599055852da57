"""Every command shown in the README and in docs/running-at-scale.md is a real one.

Command lines that run mcn, torchrun or ray are parsed by the real parser of the tool (tests/command_check.py);
`docker compose` lines must name services of the Compose files and what those run is checked the same way;
`docker run` lines must run the image's `mcn` with real arguments; `docker build` lines may only pass the
build arguments and secrets the Dockerfile declares; the multi-node script runs with stub launchers.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from command_check import (
    COMPOSE,
    DOCKER,
    REPO,
    check_command,
    check_torchrun,
    compose_services,
    expand_variables,
    run_torchrun_script,
    service_argv,
)

DOCS = REPO / "docs" / "running-at-scale.md"
README = REPO / "README.md"


def shell_lines(markdown: str) -> list[str]:
    """Every command line of the fenced shell blocks, continuations joined, prompts and comments dropped."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", markdown, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().removeprefix("$ ").strip().rstrip("&").strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def strip_env(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``NAME=value`` words (environment for the command) and the command itself."""
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        name, value = tokens[0].split("=", 1)
        env[name] = value
        tokens = tokens[1:]
    return env, tokens


COMPOSE_RUN_OPTIONS_WITH_VALUE = {
    "--entrypoint",
    "-e",
    "--env",
    "-v",
    "--volume",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "--name",
}


def check_compose(tokens: list[str]) -> str:
    """``docker compose [-f FILE]... [--profile P] SUBCOMMAND ...``: the files exist, the services named exist,
    and a ``run`` runs a real command."""
    position, files = 2, []
    while tokens[position].startswith("-"):
        if tokens[position] in ("-f", "--file"):
            files.append(REPO / tokens[position + 1])
        position += 2 if tokens[position] in ("-f", "--file", "-p", "--project-name", "--profile") else 1
    files = files or [COMPOSE]
    for path in files:
        assert path.exists(), f"no Compose file {path}"
    services = compose_services(*files)
    subcommand, rest = tokens[position], tokens[position + 1 :]
    if subcommand != "run":
        named = [t for t in rest if not t.startswith("-")]
        unknown = set(named) - set(services)
        assert not unknown, f"`{shlex.join(tokens)}` names services that do not exist: {unknown}"
        return f"docker compose {subcommand}"
    entrypoint_override, position = None, 0
    while rest[position].startswith("-"):
        if rest[position] in COMPOSE_RUN_OPTIONS_WITH_VALUE:
            if rest[position] == "--entrypoint":
                entrypoint_override = [rest[position + 1]]
            position += 1
        position += 1
    service = services[rest[position]]
    command = rest[position + 1 :] or None
    argv = service_argv(service, command)
    if entrypoint_override:
        argv = [*entrypoint_override, *(command or [])]
    assert check_command(argv), f"`{shlex.join(tokens)}` runs {argv}"
    return "docker compose run"


def dockerfile_build_inputs() -> tuple[set[str], set[str]]:
    """The build arguments (ARG names) and secret ids the Dockerfile declares."""
    text = (DOCKER / "Dockerfile").read_text()
    args = set(re.findall(r"^ARG\s+([A-Z_][A-Z0-9_]*)", text, re.MULTILINE))
    secrets = set(re.findall(r"--mount=type=secret,id=([\w-]+)", text))
    return args, secrets


def check_docker_build(tokens: list[str]) -> str:
    """``docker build``: the Dockerfile exists and every --build-arg / --secret is one it declares."""
    build_args, secret_ids = dockerfile_build_inputs()
    for flag, value in zip(tokens, tokens[1:]):
        if flag == "-f":
            assert (REPO / value).exists(), f"no Dockerfile {value}"
        if flag == "--build-arg":
            assert value.split("=", 1)[0] in build_args, f"the Dockerfile declares no ARG {value}"
        if flag == "--secret":
            fields = dict(field.split("=", 1) for field in value.split(","))
            assert fields["id"] in secret_ids, f"the Dockerfile mounts no secret {fields['id']}"
    return "docker build"


def check_docs_line(line: str, tmp_path: Path) -> str | None:
    env, tokens = strip_env(shlex.split(expand_variables(line)))
    kind = check_command(tokens)
    if kind is not None:
        return kind
    if tokens[:2] == ["docker", "compose"]:
        return check_compose(tokens)
    if tokens[:2] == ["docker", "build"]:
        return check_docker_build(tokens)
    if tokens[:2] == ["docker", "run"]:
        image_at = next(i for i, t in enumerate(tokens) if t.startswith("mcn:"))
        return check_command(["mcn", *tokens[image_at + 1 :]]) and "docker run"
    if tokens and tokens[0].endswith("torchrun-multinode.sh"):
        result, argv = run_torchrun_script(tmp_path, tokens[1:], env)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        check_torchrun(argv[argv.index(env.get("MCN_IMAGE", "torchrun")) + 1 :])
        return "script"
    if tokens and tokens[0].startswith("docker/"):
        assert (REPO / tokens[0]).exists(), f"no script {tokens[0]}"
        return "docker script"
    if tokens[:1] == ["make"]:
        makefile = (REPO / "Makefile").read_text()
        for target in tokens[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"no make target {target}"
        return "make"
    return None


def test_every_command_in_the_docs_is_a_real_invocation(tmp_path: Path) -> None:
    kinds = [check_docs_line(line, tmp_path) for line in shell_lines(DOCS.read_text())]
    for wanted in (
        "mcn",
        "ray job submit",
        "torchrun",
        "docker compose run",
        "docker compose up",
        "docker run",
        "docker build",
        "docker script",
        "make",
        "script",
    ):
        assert wanted in kinds, f"docs/running-at-scale.md shows no `{wanted}` command"


def test_docs_give_the_sizing_storage_and_image_figures() -> None:
    text = DOCS.read_text()
    for figure in (
        "64.8 MB per hour",
        "24 video-seconds per second per CPU core",
        "1,000 video-seconds per GPU-second",
        "9,700 clips/s",
        "docker smoke passed",
    ):
        assert figure in text
    assert re.search(r"\d+(\.\d+)? GB", text), "the docs give the image's size"
    assert "bench/extract.py" in text
    for path in (
        COMPOSE,
        DOCKER / "compose.gpu.yaml",
        DOCKER / "build-base.sh",
        DOCKER / "cluster" / "ray-cluster.yaml",
        DOCKER / "cluster" / "kuberay-rayjob.yaml",
        DOCKER / "cluster" / "torchrun-multinode.sh",
    ):
        assert str(path.relative_to(REPO)) in text, f"the docs must show how to use {path.name}"


def test_every_command_in_the_readme_is_a_real_invocation(tmp_path: Path) -> None:
    checked = []
    for line in shell_lines(README.read_text()):
        tokens = shlex.split(expand_variables(line), comments=True)
        commands = [[]]
        for token in tokens:  # `a ; b` runs two commands
            commands.append([]) if token == ";" else commands[-1].append(token)
        for command in commands:
            if command and command[0] in ("mcn", "torchrun", "ray", "make"):
                checked.append(check_docs_line(shlex.join(command), tmp_path))
    assert checked.count("mcn") >= 15 and "torchrun" in checked and "ray job submit" in checked
    assert checked.count("make") >= 3, "the README shows make demo, make test and make docker-smoke"
    assert "docker smoke passed" in README.read_text(), (
        "the README gives the figures make docker-smoke printed"
    )
