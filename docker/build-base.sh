#!/usr/bin/env bash
# Build, from Debian's packages, a local base image that stands in for the official Python slim image, for
# machines that cannot pull from a registry. It holds what docker/Dockerfile expects of its base: Debian
# bookworm with apt sources, CA certificates and Python 3.11 with the venv module.
#
#   docker/build-base.sh                      # -> mcn-base:3.11-bookworm
#   docker/build-base.sh my-base:3.11         # another tag
#   docker build -f docker/Dockerfile --build-arg BASE_IMAGE=mcn-base:3.11-bookworm -t mcn:0.1.0 .
#
# Needs root (or a working user namespace), mmdebstrap (`apt-get install mmdebstrap`; installed here when
# missing and apt-get is available to root) and a reachable Debian mirror (DEBIAN_MIRROR, default
# http://deb.debian.org/debian; DEBIAN_SECURITY_MIRROR for the security updates).
set -euo pipefail

tag=${1:-mcn-base:3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if ! command -v mmdebstrap > /dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
    echo "build-base: installing mmdebstrap with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap > /dev/null
  else
    echo "build-base: needs mmdebstrap (apt-get install mmdebstrap)" >&2
    exit 1
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# minbase + Python: documentation, manual pages and translations are left out, as in the official slim
# images; mmdebstrap removes apt's package lists and downloaded packages at the end. (The hook's $1 is the
# new root file system, expanded by mmdebstrap's shell.)
# shellcheck disable=SC2016
mmdebstrap \
  --variant=minbase \
  --include=ca-certificates,python3,python3-venv \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/cache/debconf/*-old' \
  bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security_mirror bookworm-security main"

docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "Debian bookworm minbase + Python 3.11, built by docker/build-base.sh" \
  "$work/rootfs.tar" "$tag" > /dev/null
echo "build-base: $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}'))"
