"""Checks of the image, the Compose files, the smoke test script and the cluster recipes, without a Docker engine.

The Dockerfile is linted with hadolint and parsed: it installs exactly the runtime pins, takes its base as a
build argument, keeps secrets, caches, build folders and tests out of the image, and runs `mcn` as a non-root
user. Every command the Compose files, the smoke test and the cluster recipes run is parsed by the real parser
of the tool it calls. Building and running the image for real is `make docker-smoke` (docker/smoke.sh).
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
import tomllib
import yaml
from command_check import (
    COMPOSE,
    COMPOSE_GPU,
    DOCKER,
    REPO,
    check_command,
    check_mcn,
    check_torchrun,
    compose_services,
    expand_variables,
    run_torchrun_script,
    service_argv,
)
from torch.distributed.run import get_args_parser as torchrun_parser

from mcn.storage import STORE_ENV_VARS

DOCKERFILE = DOCKER / "Dockerfile"
HEALTHCHECK = DOCKER / "healthcheck.py"
SMOKE = DOCKER / "smoke.sh"
BUILD_BASE = DOCKER / "build-base.sh"
LAUNCHER = DOCKER / "cluster" / "ray-cluster.yaml"
RAYJOB = DOCKER / "cluster" / "kuberay-rayjob.yaml"
REQUIREMENTS = REPO / "requirements.txt"


# ---------------------------------------------------------------- Dockerfile parsing


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


def run_mounts(run_arguments: str) -> tuple[list[dict[str, str]], str]:
    """A RUN's ``--mount=k=v,...`` flags as dicts, and the shell command after them."""
    mounts = []
    rest = run_arguments
    while match := re.match(r"--mount=(\S+)\s+", rest):
        fields = [field.split("=", 1) for field in match.group(1).split(",")]
        mounts.append({key: value[0] if value else "true" for key, *value in fields})
        rest = rest[match.end() :]
    return mounts, rest


def pip_installs(shell_command: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` (or ``python -m pip install``) in a shell command."""
    lexer = shlex.shlex(shell_command, posix=True, punctuation_chars=True)
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


def runs() -> list[tuple[int, list[dict[str, str]], str]]:
    """(instruction index, mounts, shell command) of every RUN of the Dockerfile."""
    return [
        (index, *run_mounts(args))
        for index, (keyword, args) in enumerate(dockerfile_instructions(DOCKERFILE))
        if keyword == "RUN"
    ]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not found: pip install -r requirements-dev.txt"
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    # hadolint's default threshold fails on every finding, info included.
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_a_pinned_build_argument_and_nothing_is_pulled_implicitly() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE), (
        "a `# syntax=` line makes BuildKit pull its frontend image from a registry"
    )
    instructions = dockerfile_instructions(DOCKERFILE)
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    global_args = dict(
        args.split("=", 1) for keyword, args in instructions[:first_from] if keyword == "ARG" and "=" in args
    )
    default_base = global_args.get("BASE_IMAGE", "")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default_base), (
        f"BASE_IMAGE must default to a pinned official Python slim image, got {default_base!r}"
    )
    stages: set[str] = set()
    for keyword, args in instructions:
        if keyword == "FROM":
            image, *alias = args.split()
            assert image == "${BASE_IMAGE}" or image in stages, f"FROM {image}: only the BASE_IMAGE argument"
            if len(alias) == 2 and alias[0].upper() == "AS":
                stages.add(alias[1])
        copy_from = re.search(r"--from=(\S+)", args) if keyword in ("COPY", "ADD") else None
        assert copy_from is None or copy_from.group(1) in stages, f"{keyword} {args}: copies from an image"
    for _, mounts, _ in runs():
        for mount in mounts:
            assert mount.get("from", next(iter(stages), None)) in stages | {None}, f"mounts an image: {mount}"


def test_base_script_builds_the_default_base_s_equivalent() -> None:
    text = BUILD_BASE.read_text()
    assert subprocess.run(["bash", "-n", str(BUILD_BASE)], capture_output=True).returncode == 0
    for needed in ("mmdebstrap", "bookworm", "python3-venv", "ca-certificates", "docker import"):
        assert needed in text, f"docker/build-base.sh must use {needed}"
    default_tag = re.search(r"tag=\$\{1:-([^}]+)\}", text).group(1)
    assert default_tag in SMOKE.read_text(), "the smoke test builds on the base image the script makes"


def test_the_image_installs_exactly_the_runtime_pins_before_the_source() -> None:
    requirement_installs, other_installs = [], []
    for index, mounts, command in runs():
        for install in pip_installs(command):
            if "-r" in install:
                requirement_installs.append((index, mounts, install))
            else:
                other_installs.append((index, mounts, install, command))

    assert len(requirement_installs) == 1, "install the requirements with exactly one `pip install -r`"
    index_requirements, mounts, install = requirement_installs[0]
    target = install[install.index("-r") + 1]
    binds = {m["target"]: m.get("source") for m in mounts if m.get("type") == "bind"}
    assert binds.get(target) == "requirements.txt", f"`-r {target}` must be the repository's requirements.txt"
    if "--progress-bar" in install:  # a build log without progress bars
        at = install.index("--progress-bar")
        install = install[:at] + install[at + 2 :]
    assert [t for t in install if t.startswith("-") and t != "-r"] == []
    assert [t for t in install if not t.startswith("-")] == [target], (
        f"nothing but the requirements: {install}"
    )
    assert not any("requirements-dev" in args for _, args in dockerfile_instructions(DOCKERFILE)), (
        "test and lint pins stay out of the image"
    )

    assert other_installs, "the project itself is installed after the requirements"
    for index, mounts, other, command in other_installs:
        assert index > index_requirements, "install the requirements before the source (layer cache)"
        assert {"--no-deps", "--no-build-isolation"} <= set(other), (
            f"the project installs without resolving or downloading anything: {other}"
        )
        packages = [t for t in other if not t.startswith("-")]
        context_mounts = [m["target"] for m in mounts if m.get("type") == "bind" and "source" not in m]
        assert len(context_mounts) == 1, "the project comes from a mount of the build context"
        for package in packages:
            copied = f"cp -r {context_mounts[0]} {package}" in command
            assert package == context_mounts[0] or copied, f"only the project itself: {other}"
            assert not copied or f"rm -rf {package}" in command, (
                f"the copy of the source ({package}) is removed in the same step"
            )


def test_no_secret_cache_or_source_stays_in_the_image() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    for keyword, args in instructions:
        if keyword in ("COPY", "ADD"):
            sources = [p for p in args.split() if not p.startswith("--")][:-1]
            assert sources == ["docker/healthcheck.py"], f"{keyword} {args}: the source comes in by a mount"
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"CERT|CA_BUNDLE|SSL", args), (
                f"{keyword} {args}: pass CA bundles as a secret"
            )
    secret_ids = set()
    for _, mounts, command in runs():
        secret_ids |= {m["id"] for m in mounts if m.get("type") == "secret"}
        cached = any(m.get("type") == "cache" for m in mounts)
        for install in pip_installs(command):
            assert cached or "--no-cache-dir" in install, f"pip's cache would stay in the image: {install}"
        if "apt-get install" in command:
            assert "rm -rf /var/lib/apt/lists/*" in command, "apt's lists go in the same layer"
    assert secret_ids == {"pip-ca", "pip-conf"}, "pip's CA bundle and config come in as build secrets"
    assert "PIP_CERT=/run/secrets/pip-ca" in DOCKERFILE.read_text()
    assert "PIP_CONFIG_FILE=/run/secrets/pip-conf" in DOCKERFILE.read_text()


def test_the_image_runs_mcn_as_a_non_root_user_with_a_health_check() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    entrypoint = next((args for keyword, args in reversed(instructions) if keyword == "ENTRYPOINT"), "null")
    assert json.loads(entrypoint) == ["mcn"], "the entry point is the mcn CLI"
    healthcheck = next(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    test = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    copied_to = {
        parts[-1]: parts[0]
        for keyword, args in instructions
        if keyword == "COPY" and len(parts := [p for p in args.split() if not p.startswith("--")]) == 2
    }
    assert test[:1] == ["python"] and copied_to.get(test[1]) == "docker/healthcheck.py", test


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


def test_dockerignore_keeps_the_context_to_what_the_image_installs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_docker.py",
        "requirements-dev.txt",
        "runs/x/step-1",
        "mcn-demo/corpus/train/a.mp4",
        "mcn/__pycache__/cli.pyc",
        "mcn.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(path, patterns), f"{path} should stay out of the build context"
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = ["pyproject.toml", "README.md", "requirements.txt", "docker/healthcheck.py"]
    needed += [f"{folder}/__init__.py" for folder in setuptools["package-dir"].values()]
    for path in needed:
        assert (REPO / path).exists(), f"{path} is missing from the repository"
        assert not dockerignore_excludes(path, patterns), f"{path} is installed but left out of the context"


# ---------------------------------------------------------------- the health check


@pytest.fixture
def healthcheck(monkeypatch, tmp_path: Path):
    """The image's health check module, pointed at a fake /proc and at a local HTTP server's answers."""
    spec = importlib.util.spec_from_file_location("image_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    answers: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's API)
            body = answers.get(self.path)
            self.send_response(200 if body is not None else 503)
            self.end_headers()
            self.wfile.write(body or b"down")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(module, "RAYLET_HEALTH", f"{base}/raylet")
    monkeypatch.setattr(module, "GCS_HEALTH", f"{base}/gcs")
    proc = tmp_path / "proc"
    proc.mkdir()
    monkeypatch.setattr(module, "PROC", proc)

    def process(pid: int, *argv: str) -> None:
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")

    yield module, process, answers
    server.shutdown()


def test_healthcheck_passes_without_a_ray_node_and_checks_a_worker_s_raylet(healthcheck) -> None:
    module, process, answers = healthcheck
    process(1, "/sbin/docker-init", "--", "mcn", "train", "--store", "/data/store")
    process(7, "/opt/venv/bin/python", "/opt/venv/bin/mcn", "train", "--store", "/data/store")
    assert module.main() == 0, "a one-shot job has nothing long-running to check"

    process(12, "/opt/venv/bin/python3", "/opt/venv/bin/ray", "start", "--address=ray-head:6379", "--block")
    assert module.main() == 1, "a worker whose raylet does not answer is unhealthy"
    answers["/raylet"] = b"success"
    assert module.main() == 0, "a worker needs only its raylet"


def test_healthcheck_of_a_head_needs_the_gcs_too(healthcheck) -> None:
    module, process, answers = healthcheck
    process(12, "/opt/venv/bin/python3", "/opt/venv/bin/ray", "start", "--head", "--port=6379", "--block")
    answers["/raylet"] = b"success"
    assert module.main() == 1, "a head whose GCS does not answer is unhealthy"
    answers["/gcs"] = b"failed: GCS unreachable"
    assert module.main() == 1
    answers["/gcs"] = b"success"
    assert module.main() == 0


# ---------------------------------------------------------------- Compose


def has_nvidia_gpus(service: dict) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_compose_services_share_one_data_volume_and_run_on_the_cpu() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "name" not in compose, "a top-level name is unknown to Compose v1 (docker/.env names the project)"
    assert "COMPOSE_PROJECT_NAME=mcn" in (DOCKER / ".env").read_text()
    services = compose["services"]
    assert {"ray-head", "ray-worker", "extract", "train", "eval", "sample-data", "mcn"} <= set(services)
    for name, service in services.items():
        mounts = [v for v in service.get("volumes", []) if v.endswith(":/data")]
        assert len(mounts) == 1, f"{name} must mount the data volume at /data"
        assert service["image"] == "${MCN_IMAGE:-mcn:0.1.0}"
        assert service.get("init") is True, f"{name}: Docker's init reaps what Ray and the loaders leave"
        assert not has_nvidia_gpus(service), f"{name}: GPU reservations belong in compose.gpu.yaml"
        if name not in ("ray-head", "ray-worker"):
            assert "jobs" in service.get("profiles", []), f"{name} is a one-shot job, not started by `up`"
    assert len({v for s in services.values() for v in s["volumes"]}) == 1
    assert services["ray-head"]["healthcheck"]["test"] == ["CMD", "python", "/opt/mcn/healthcheck.py"]
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["extract"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_the_gpu_override_reserves_gpus_and_trains_on_every_one() -> None:
    override = yaml.safe_load(COMPOSE_GPU.read_text())["services"]
    base = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(override) <= set(base), "the override only adds to services of compose.yaml"
    for name in ("ray-worker", "train", "eval-prepare"):
        assert has_nvidia_gpus(override[name]), f"{name} must reserve GPUs the compose way"
    train = compose_services(COMPOSE, COMPOSE_GPU)["train"]
    args = torchrun_parser().parse_args(service_argv(train)[1:])
    assert args.nproc_per_node == "gpu" and args.standalone


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_every_compose_command_is_a_real_invocation(files: tuple[Path, ...]) -> None:
    kinds = set()
    for name, service in compose_services(*files).items():
        kind = check_command(service_argv(service) if "command" in service else ["mcn", "--help"])
        assert kind is not None, f"service {name} runs neither mcn, ray nor torchrun: {service_argv(service)}"
        kinds.add(kind)
    assert {"mcn", "ray job submit", "ray"} <= kinds
    if COMPOSE_GPU in files:
        assert "torchrun" in kinds


# ---------------------------------------------------------------- the smoke test script


def smoke_jobs() -> list[tuple[str, str, list[str]]]:
    result = subprocess.run(
        ["bash", str(SMOKE), "--print-commands"], capture_output=True, text=True, timeout=30, check=True
    )
    jobs = []
    for line in result.stdout.splitlines():
        step, service, command = line.split("|")
        jobs.append((step, service, shlex.split(command)))
    return jobs


def test_smoke_script_runs_the_whole_chain_with_real_commands() -> None:
    assert subprocess.run(["bash", "-n", str(SMOKE)], capture_output=True).returncode == 0
    services = compose_services(COMPOSE)
    jobs = smoke_jobs()
    assert [step for step, _, _ in jobs] == [
        "sample-data",
        "extract",
        "extract",
        "train",
        "eval-prepare",
        "eval",
        "verify",
        "verify",
    ]
    for step, service, argv in jobs:
        assert service in services, f"{step}: no Compose service {service}"
        entrypoint = services[service].get("entrypoint", ["mcn"])
        assert argv[: len(entrypoint)] == entrypoint, f"{step}: {service} runs {entrypoint}, not {argv[0]}"
        check_command(argv)
    by_step = {step: argv for step, _, argv in jobs}
    assert by_step["sample-data"][by_step["sample-data"].index("--preset") + 1] == "tiny"
    extract = by_step["extract"]
    assert extract[:3] == ["ray", "job", "submit"] and "--preset" in extract
    assert extract[extract.index("--preset") + 1] == "tiny_cpu"
    assert "--max-steps" in by_step["train"]
    assert by_step["eval-prepare"][:4] == ["mcn", "eval", "prepare", "generic"]
    assert by_step["eval"][:3] == ["mcn", "eval", "retrieval"]
    benchmark = by_step["eval"][by_step["eval"].index("--benchmark") + 1]
    assert benchmark.endswith(".json"), "mcn eval retrieval takes the definition mcn eval prepare writes"
    assert by_step["verify"][:3] == ["mcn", "store", "verify"]
    text = SMOKE.read_text()
    assert "trap cleanup EXIT" in text and "down --volumes" in text, "tear down, also on failure"
    assert "docker smoke passed" in text


def test_docker_smoke_is_a_make_target_outside_ci() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^docker-smoke:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe and "docker/smoke.sh" in recipe.group(1)
    assert "docker-smoke" not in (REPO / ".ci" / "run").read_text()


# ---------------------------------------------------------------- cluster recipes


def test_cluster_launcher_config_is_valid_and_its_commands_are_real() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    import jsonschema

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["image"].endswith("/mcn:0.1.0")
    assert "--volume /mnt/data:/data" in config["docker"]["run_options"]
    # The launcher runs `docker run ... IMAGE bash`; with the image's entry point that would be `mcn bash`.
    assert "--entrypoint=" in config["docker"]["run_options"]
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
            for probe in ("readinessProbe", "livenessProbe"):  # KubeRay's default probes need wget
                assert container[probe]["exec"]["command"] == ["python", "/opt/mcn/healthcheck.py"]
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
    assert "/mnt/data:/data" in argv[:image_at] and "--env" not in argv
    check_torchrun(argv[image_at + 1 :])

    # a store in S3: the container gets every one of the host's store settings (the names the Python side hands
    # to its workers) by name, the values stay off the command line
    aws = {name: f"not-on-the-command-line-{i}" for i, name in enumerate(STORE_ENV_VARS)}
    result, argv = run_torchrun_script(
        tmp_path, ["s3://bucket/store", "/data/runs/mcn"], {**env, "MCN_IMAGE": "mcn:0.1.0", **aws}
    )
    assert result.returncode == 0, result.stderr
    image_at = argv.index("mcn:0.1.0")
    passed = [argv[i + 1] for i, token in enumerate(argv[:image_at]) if token == "--env"]
    assert sorted(passed) == sorted(aws) and not set(aws.values()) & set(argv)
    assert argv[argv.index("--store") + 1] == "s3://bucket/store"

    result, argv = run_torchrun_script(
        tmp_path, ["/data/store", "/data/runs/mcn"], {"MASTER_ADDR": "10.0.0.1"}
    )
    assert result.returncode != 0 and "NNODES" in result.stderr and argv == []
