#!/usr/bin/env bash
# Prints a base image and its digest, one per line, for the image's labels.
#   base-image.sh ENGINE        the base `make image` builds on: the Dockerfile's BASE_IMAGE
#                               (the official Python image, pinned by digest) when the
#                               engine has it, else the newest skinlesion-base:bookworm-*
#                               stand-in that local-engine.sh made
#   base-image.sh ENGINE REF    REF itself (pulled by the engine beforehand)
# The digest: the one pinned in the name, else the registry's, else the local image id.
# Exits 1 with what to run when there is no such image.
set -euo pipefail
engine=${1:?usage: base-image.sh ENGINE [IMAGE]}
ref=${2:-}
cd "$(dirname "$0")/../.."
if [ -z "$ref" ]; then
  ref=$(sed -n 's/^ARG BASE_IMAGE=//p' infra/docker/Dockerfile)
  if ! "$engine" image inspect "$ref" >/dev/null 2>&1; then
    ref=$("$engine" images --format '{{.Repository}}:{{.Tag}}' \
      --filter 'reference=*skinlesion-base:bookworm-*' | sort -r | head -1)
  fi
fi
if [ -z "$ref" ] || ! "$engine" image inspect "$ref" >/dev/null 2>&1; then
  echo "no base image ${ref:-(neither the official one nor a skinlesion-base stand-in)} in" \
    "$engine's store: run infra/docker/local-engine.sh" >&2
  exit 1
fi
if [[ $ref == *@* ]]; then
  digest=${ref#*@}
else
  digest=$("$engine" image inspect --format '{{range .RepoDigests}}{{.}} {{end}}' "$ref" \
    | tr ' ' '\n' | sed -n 's/.*@//p' | head -1)
  if [ -z "$digest" ]; then
    digest=$("$engine" image inspect --format '{{.Id}}' "$ref")
    digest=sha256:${digest#sha256:}
  fi
fi
echo "$ref"
echo "$digest"
