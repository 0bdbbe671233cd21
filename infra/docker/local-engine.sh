#!/usr/bin/env bash
# A container engine and a base image for infra/docker/Dockerfile on a Debian machine that
# may reach no container registry (CI here, air-gapped build hosts). Idempotent.
#
# 1. The engine: docker or podman, whichever answers. Failing both, Docker's engine from
#    Debian (docker.io), started with no bridge and no iptables rules (builds and
#    containers use the host network), its store under $ENGINE_DIR. Only installing
#    packages and starting that engine need root; without root the script says what to
#    run and stops.
# 2. The base: the Dockerfile's BASE_IMAGE (the official Python image, pinned by digest),
#    pulled when a registry answers. Otherwise a stand-in under a name of its own,
#    skinlesion-base:bookworm-YYYYMMDD: a Debian bookworm minbase with Debian's Python 3.11,
#    made by mmdebstrap without the build host's /etc/hostname and /etc/resolv.conf.
#    It never takes the official name. `make image` builds on the base that
#    infra/docker/base-image.sh names (the official one when present, else the newest
#    stand-in) and records it in the image's labels.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE_DIR=${ENGINE_DIR:-/var/lib/skinlesion-engine}
OFFICIAL_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' infra/docker/Dockerfile)

as_root() {  # stop with a clear message where root is needed and missing
  if [ "$(id -u)" != 0 ]; then
    echo "local-engine.sh: $1 needs root: run 'sudo $0', or install docker or podman" \
      "yourself and run it again" >&2
    exit 1
  fi
}

need() {  # install Debian packages that are missing
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    as_root "installing ${missing[*]}"
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
    engine=$candidate
    break
  fi
done
if [ -z "$engine" ]; then
  as_root "starting Docker's engine"
  need docker.io
  mkdir -p "$ENGINE_DIR"
  echo "starting dockerd (log: $ENGINE_DIR/dockerd.log)"
  nohup dockerd --iptables=false --bridge=none --data-root "$ENGINE_DIR/docker" \
    >"$ENGINE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -20 "$ENGINE_DIR/dockerd.log" >&2; exit 1; }
  engine=docker
fi
echo "engine: $engine"

# Earlier versions imported their stand-in under the official tag: a tag without a
# registry digest is such a stand-in, and is removed so it cannot pass for the original.
tag=${OFFICIAL_BASE%@*}
if [ "$("$engine" image inspect --format '{{len .RepoDigests}}' "$tag" 2>/dev/null)" = 0 ]; then
  "$engine" rmi "$tag" >/dev/null && echo "removed $tag: a stand-in under the official name"
fi

if "$engine" image inspect "$OFFICIAL_BASE" >/dev/null 2>&1; then
  echo "base image $OFFICIAL_BASE present"
elif timeout 60 "$engine" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
  echo "base image $OFFICIAL_BASE pulled"
elif standin=$(infra/docker/base-image.sh "$engine" 2>/dev/null | head -1); then
  echo "no registry: base image $standin present"
else
  need mmdebstrap
  day=$(date -u +%Y%m%d)
  standin="skinlesion-base:bookworm-$day"
  mkdir -p "$ENGINE_DIR"
  rootfs="$ENGINE_DIR/skinlesion-base-bookworm-$day.tar"
  if [ ! -s "$rootfs" ]; then
    echo "no registry: building $standin with mmdebstrap"
    partial="$ENGINE_DIR/partial-$day.tar"  # mmdebstrap reads the format from .tar
    # SOURCE_DATE_EPOCH: file times of that day, so a rebuild from the same mirror
    # state gives the same tar; the host's identity files are not carried over.
    SOURCE_DATE_EPOCH=$(date -u -d "$day" +%s) mmdebstrap --quiet --variant=minbase \
      --include=ca-certificates,python3,python3-venv,passwd \
      --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
      bookworm "$partial"
    mv "$partial" "$rootfs"
  fi
  "$engine" import \
    --change 'LABEL org.opencontainers.image.title="skinlesion-base"' \
    --change "LABEL org.opencontainers.image.description=\"Debian bookworm minbase with Debian's Python 3.11 (mmdebstrap), a stand-in for ${OFFICIAL_BASE%@*}\"" \
    --change "LABEL org.opencontainers.image.created=\"$(date -u -d "$day" +%Y-%m-%dT%H:%M:%SZ)\"" \
    "$rootfs" "$standin" >/dev/null
  echo "base image $standin imported from $rootfs (Debian's Python 3.11)"
fi
echo "make image builds on: $(infra/docker/base-image.sh "$engine" | head -1)"
