#!/usr/bin/env bash
# `make docker-smoke`: build the image and run the whole chain in containers on this machine's CPU.
#
#   1. build the image (on the base from docker/build-base.sh when no registry is reachable);
#   2. `mcn --version` in the image, as its non-root user;
#   3. Compose: a Ray head and a Ray worker;
#   4. `mcn sample-data` (tiny preset) into the shared volume;
#   5. the extraction job, submitted with `ray job submit` to the head, with the tiny models;
#   6. `mcn train`, a few dozen steps;  7. `mcn eval retrieval` on the held-out videos;
#   8. `mcn store verify` on both stores;
# then tears everything down (containers, network and volume), also when a step fails. The last line gives
# the image size, each step's wall time and `docker smoke passed`.
#
# Needs a running Docker engine with BuildKit (buildx, or Docker 20.10's own client with DOCKER_BUILDKIT=1)
# and Compose (`docker compose` or `docker-compose`; as root, Debian's docker-compose is installed when
# neither is there). Wheels: the pinned wheels are fetched by this machine's pip (its indexes, find-links and
# mirrors) into a wheel folder (MCN_WHEELHOUSE, default ~/.cache/mcn/docker-wheels) that is served to the
# build over HTTP on 127.0.0.1 (a pip.conf passed as the build secret pip-conf points pip at it), so nothing
# is downloaded twice and nothing is baked in; MCN_WHEELHOUSE=none lets pip in the build fetch from PyPI. BASE_IMAGE picks the base image; MCN_IMAGE the image tag.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${MCN_IMAGE:-mcn:0.1.0}
project=mcn-smoke
local_base=mcn-base:3.11-bookworm
wheelhouse=${MCN_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcn/docker-wheels}
python=${PYTHON:-python3}
ca_bundle=${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# ------------------------------------------------------------ the commands run in the containers
# STEP|SERVICE|COMMAND: COMMAND runs in a one-shot container of the Compose service SERVICE, whose entry
# point is COMMAND's first word (mcn, or ray for the extraction's submitter). `--print-commands` lists them.
jobs=(
  "sample-data|sample-data|mcn sample-data /data/corpus --preset tiny --num-videos 12 --seed 0"
  "extract|extract|ray job submit --address=http://ray-head:8265 -- mcn extract /data/corpus/train --out /data/store --preset tiny_cpu --word-vectors /data/corpus/word2vec.bin --no-progress"
  "extract|extract|ray job submit --address=http://ray-head:8265 -- mcn extract /data/corpus/heldout --out /data/benchmarks/sample-store --preset tiny_cpu --word-vectors /data/corpus/word2vec.bin --no-progress"
  "train|train|mcn train --store /data/store --out /data/runs/mcn --preset tiny --epochs 1000 --max-steps 40 --checkpoint-every 20 --no-progress"
  "eval-prepare|eval|mcn eval prepare generic --annotations /data/corpus/benchmark_retrieval.csv --audio-frames 2000 --videos /data/corpus/heldout --out /data/benchmarks/sample-store --no-extract"
  "eval|eval|mcn eval retrieval --checkpoint /data/runs/mcn --benchmark /data/benchmarks/sample-store/benchmarks/benchmark_retrieval.json --store /data/benchmarks/sample-store --out /data/eval/sample"
  "verify|mcn|mcn store verify /data/store"
  "verify|mcn|mcn store verify /data/benchmarks/sample-store"
)
if [[ ${1:-} == --print-commands ]]; then
  printf '%s\n' "${jobs[@]}"
  exit 0
fi

# ------------------------------------------------------------ tools
log() { echo "docker-smoke: $*" >&2; }
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

buildkit_build() {
  # A client whose `build` is BuildKit: buildx, or a Docker client before 23 (Debian's docker.io) with
  # DOCKER_BUILDKIT=1. Another client may come first on PATH without buildx.
  if docker buildx version > /dev/null 2>&1; then
    docker buildx build --load "$@"
    return
  fi
  local client major
  for client in $(type -ap docker); do
    major=$("$client" version --format '{{.Client.Version}}' 2> /dev/null | cut -d. -f1) || true
    if [[ $major =~ ^[0-9]+$ ]] && ((major < 23)); then
      DOCKER_BUILDKIT=1 "$client" build "$@"
      return
    fi
  done
  log "no BuildKit builder: install the buildx plugin (or Debian's docker.io, whose client has BuildKit)"
  return 1
}

compose_cmd=()
find_compose() {
  if docker compose version > /dev/null 2>&1; then
    compose_cmd=(docker compose)
  elif command -v docker-compose > /dev/null; then
    compose_cmd=(docker-compose)
  elif [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
    log "installing Debian's docker-compose with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose > /dev/null
    compose_cmd=(docker-compose)
  else
    log "needs Docker Compose: the compose plugin or docker-compose (apt-get install docker-compose)"
    return 1
  fi
}
compose() {
  MCN_IMAGE=$image MCN_DATA=mcn-data MCN_DASHBOARD_PORT=$dashboard_port "${compose_cmd[@]}" -p "$project" -f docker/compose.yaml "$@"
}

declare -A step_seconds=()
step_names=()
record() {  # STEP SECONDS: add to the step's wall time
  [[ -v step_seconds[$1] ]] || step_names+=("$1")
  step_seconds[$1]=$((${step_seconds[$1]:-0} + $2))
}
current=""
step() {  # STEP COMMAND...: run and time one step
  current=$1
  shift
  log "--- $current"
  local started=$SECONDS
  "$@"
  record "$current" $((SECONDS - started))
}

http_pid=""
pip_conf=""
cleanup() {
  local status=$?
  trap - EXIT
  if [[ $status != 0 ]]; then
    log "FAILED at step '$current' (exit $status); the cluster's last log lines:"
    if ((${#compose_cmd[@]})); then
      compose logs --no-color --tail 40 ray-head ray-worker >&2 || true
    fi
  fi
  if ((${#compose_cmd[@]})); then
    compose --profile jobs down --volumes --remove-orphans > /dev/null 2>&1 || true
  fi
  if [[ -n $http_pid ]]; then
    kill "$http_pid" 2> /dev/null || true
    rm -f "$pip_conf"
  fi
  exit "$status"
}
trap cleanup EXIT

# ------------------------------------------------------------ steps
pick_base() {
  local default_base
  default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)
  if [[ -n ${BASE_IMAGE:-} ]]; then
    base=$BASE_IMAGE
  elif docker image inspect "$default_base" > /dev/null 2>&1 || timeout 300 docker pull -q "$default_base" > /dev/null 2>&1; then
    base=$default_base
  else
    log "cannot pull $default_base: using the local base $local_base (docker/build-base.sh)"
    docker image inspect "$local_base" > /dev/null 2>&1 || docker/build-base.sh "$local_base"
    base=$local_base
  fi
}

fill_wheelhouse() {
  # Skip pip when every pin already has a wheel there (a rerun); pip otherwise fetches only what is missing.
  mkdir -p "$wheelhouse"
  local line name version missing=0
  shopt -s nocaseglob nullglob
  while read -r line; do
    line=${line%%#*}
    [[ $line == *==* ]] || continue
    name=$(echo "${line%%==*}" | sed -E 's/[-_.]+/_/g')
    version=$(echo "${line#*==}" | tr -d '[:space:]')
    local matches=("$wheelhouse/${name}-${version}-"*.whl)
    ((${#matches[@]})) || missing=$((missing + 1))
  done < requirements.txt
  shopt -u nocaseglob nullglob
  if ((missing)); then
    log "fetching $missing pinned wheels into $wheelhouse with this machine's pip"
    if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: -r requirements.txt \
      -d "$wheelhouse" > "$wheelhouse/download.log" 2>&1; then
      grep -v "is ignored: it is neither a file nor a directory" "$wheelhouse/download.log" >&2
      return 1
    fi
  fi
}

build_image() {
  pick_base
  local args=(--network host --build-arg "BASE_IMAGE=$base" -f docker/Dockerfile -t "$image")
  [[ -s $ca_bundle ]] && args+=(--secret "id=pip-ca,src=$ca_bundle")
  if [[ $wheelhouse != none ]]; then
    fill_wheelhouse
    local port
    port=$(free_port)
    "$python" -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" > /dev/null 2>&1 &
    http_pid=$!
    # A pip.conf as a secret, not build arguments: the port changes from run to run, and build arguments
    # would make each run reinstall the requirements layer.
    pip_conf=$(mktemp)
    printf '[global]\nfind-links = http://127.0.0.1:%s/\nno-index = true\nno-cache-dir = true\n' "$port" \
      > "$pip_conf"
    args+=(--secret "id=pip-conf,src=$pip_conf")
  fi
  buildkit_build "${args[@]}" .
  if [[ -n $http_pid ]]; then
    kill "$http_pid"
    http_pid=""
    rm -f "$pip_conf"
  fi
}

check_version_as_non_root() {
  local out
  out=$(docker run --rm --entrypoint sh "$image" -c 'echo "uid=$(id -u)"; exec mcn --version')
  echo "$out"
  [[ $out == uid=1000* ]] || { log "the image does not run as uid 1000: $out"; return 1; }
  [[ $out == *"mcn "[0-9]* ]] || { log "mcn --version printed no version: $out"; return 1; }
}

cluster_up() {
  compose --profile jobs down --volumes --remove-orphans > /dev/null 2>&1 || true  # leftovers of a killed run
  compose up -d ray-head ray-worker
  local _
  for _ in $(seq 60); do  # the worker has joined when the cluster shows two nodes
    if compose exec -T ray-head python -c 'import ray; ray.init(address="auto", logging_level="ERROR"); import sys; sys.exit(len([n for n in ray.nodes() if n["Alive"]]) != 2)' > /dev/null 2>&1; then
      return 0
    fi
    sleep 2
  done
  log "the Ray worker did not join the head"
  return 1
}

run_jobs() {
  local entry service command argv started
  for entry in "${jobs[@]}"; do
    IFS='|' read -r current service command <<< "$entry"
    read -ra argv <<< "$command"
    log "--- $current: $command"
    started=$SECONDS
    compose run --rm -T "$service" "${argv[@]:1}"
    record "$current" $((SECONDS - started))
  done
}

find_compose
dashboard_port=$(free_port)
step build build_image
step version check_version_as_non_root
step cluster cluster_up
run_jobs
size=$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')
compose --profile jobs down --volumes --remove-orphans > /dev/null 2>&1
current=""
summary=""
for name in "${step_names[@]}"; do
  summary+="$name ${step_seconds[$name]} s, "
done
echo "image $image $size; ${summary%, }; docker smoke passed"
