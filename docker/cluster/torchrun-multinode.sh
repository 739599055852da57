#!/usr/bin/env bash
# Multi-node DDP training with torchrun. Run the same command on every node; the nodes meet at
# MASTER_ADDR:MASTER_PORT (c10d rendezvous, so no node ranks to hand out).
#
#   NNODES=2 MASTER_ADDR=10.0.0.1 MCN_IMAGE=mcn:0.1.0 docker/cluster/torchrun-multinode.sh /data/store /data/runs/mcn
#
# STORE and RUN are paths as the training processes see them (inside the container when MCN_IMAGE is
# set, where MCN_DATA, default /mnt/data, is mounted at /data); STORE may also be an s3:// URL: the container
# then gets the host's AWS_* endpoint, key and region variables. Extra arguments go to `mcn train`, for
# example `--preset NAME`. Without MCN_IMAGE, torchrun from PATH is used (a host with the project
# installed). A restarted worker group resumes from the run's latest checkpoint.
#
# Environment: NNODES (required), MASTER_ADDR (required), MASTER_PORT (29500), GPUS_PER_NODE (gpu = all
# visible), RDZV_ID (mcn-<run folder name>), MAX_RESTARTS (3), MCN_IMAGE, MCN_DATA.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: NNODES=N MASTER_ADDR=HOST $0 STORE RUN [mcn train flags...]" >&2
  exit 2
fi
store=$1
run=$2
shift 2
: "${NNODES:?set NNODES to the number of machines}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of one of the machines}"

if [[ -n "${MCN_IMAGE:-}" ]]; then
  # Host networking for NCCL and the rendezvous; host IPC for DataLoader shared memory.
  launcher=(docker run --rm --gpus all --network host --ipc host
    --volume "${MCN_DATA:-/mnt/data}:/data")
  # A store in S3: the host's endpoint, keys and region, passed by name (no value on the command line).
  for name in AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
    AWS_REGION AWS_DEFAULT_REGION; do
    if [[ -n "${!name:-}" ]]; then launcher+=(--env "$name"); fi
  done
  launcher+=(--entrypoint torchrun "$MCN_IMAGE")
else
  launcher=(torchrun)
fi

exec "${launcher[@]}" \
  --nnodes "$NNODES" \
  --nproc-per-node "${GPUS_PER_NODE:-gpu}" \
  --rdzv-backend c10d \
  --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" \
  --rdzv-id "${RDZV_ID:-mcn-$(basename "$run")}" \
  --max-restarts "${MAX_RESTARTS:-3}" \
  -m mcn.train --store "$store" --out "$run" --resume "$@"
