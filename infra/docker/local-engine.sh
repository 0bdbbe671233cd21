#!/usr/bin/env bash
# A container engine and the Dockerfile's base image on a Debian machine that reaches no
# container registry (CI here, air-gapped build hosts). Idempotent; run as root.
#
# 1. Docker's engine from Debian (docker.io), started with no bridge and no iptables rules
#    (containers and builds use the host network), its store under $ENGINE_DIR.
# 2. The base image: pulled when a registry answers; otherwise a Debian bookworm minbase
#    with Python 3.11 and venv, made by mmdebstrap from Debian's packages and imported
#    under the base's tag, so infra/docker/Dockerfile builds unchanged (its Python is then
#    Debian's 3.11, not the official image's).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE_DIR=${ENGINE_DIR:-/var/lib/skinlesion-engine}
BASE_IMAGE=$(sed -n 's/^ARG BASE_IMAGE=//p' infra/docker/Dockerfile)
mkdir -p "$ENGINE_DIR"

need() {  # install Debian packages that are missing
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

if ! docker info >/dev/null 2>&1; then
  need docker.io
  echo "starting dockerd (log: $ENGINE_DIR/dockerd.log)"
  nohup dockerd --iptables=false --bridge=none --data-root "$ENGINE_DIR/docker" \
    >"$ENGINE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -20 "$ENGINE_DIR/dockerd.log" >&2; exit 1; }
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE present"
elif timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE pulled"
else
  need mmdebstrap
  rootfs="$ENGINE_DIR/bookworm-python.tar"
  if [ ! -s "$rootfs" ]; then
    echo "no registry: building a Debian bookworm base with mmdebstrap"
    partial="$ENGINE_DIR/partial-bookworm-python.tar"  # mmdebstrap reads the format from .tar
    mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3,python3-venv,passwd \
      bookworm "$partial"
    mv "$partial" "$rootfs"
  fi
  docker import "$rootfs" "$BASE_IMAGE" >/dev/null
  echo "base image $BASE_IMAGE imported from $rootfs (Debian's Python 3.11)"
fi
