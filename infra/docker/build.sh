#!/usr/bin/env bash
# Builds infra/docker/Dockerfile with BuildKit and labels the image with its provenance.
#   usage: build.sh TAG [BASE] [more build arguments...]
#   ENGINE   docker or podman (default: whichever is on PATH)
#   PIP_CA   optional CA file of a TLS-inspecting proxy, handed to pip as a build secret:
#            mounted for the install step only, in no layer and no file in the tree
# BASE defaults to what base-image.sh resolves (the official base, else the local
# stand-in). The labels: the commit (with -dirty when tracked files differ from it), the
# build time, the package version, the base's name and digest.
# BuildKit: podman always; docker through its buildx plugin or, for a docker CLI before 23
# (Debian bookworm's docker.io), DOCKER_BUILDKIT=1 (another docker CLI on PATH without
# buildx is passed over for /usr/bin/docker when that one can).
set -euo pipefail
tag=${1:?usage: build.sh TAG [BASE] [more build arguments...]}
base_ref=${2:-}
shift $(($# < 2 ? $# : 2))
cd "$(dirname "$0")/../.."
engine=${ENGINE:-$(command -v docker || command -v podman || true)}
[ -n "$engine" ] || { echo "build.sh: no docker or podman (see infra/docker/local-engine.sh)" >&2; exit 1; }

builder() {  # the command that builds with BuildKit, or nothing
  case "$(basename "$1")" in
    podman) echo "$1 build" ;;
    *)
      if "$1" buildx version >/dev/null 2>&1; then echo "$1 buildx build --load"; return; fi
      local major
      major=$("$1" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
      if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "env DOCKER_BUILDKIT=1 $1 build"; fi ;;
  esac
}
build=$(builder "$engine")
if [ -z "$build" ] && [ -x /usr/bin/docker ]; then build=$(builder /usr/bin/docker); fi
[ -n "$build" ] || { echo "build.sh: $engine cannot build with BuildKit: install its buildx plugin, or use podman" >&2; exit 1; }

mapfile -t base < <(infra/docker/base-image.sh "$engine" $base_ref)
[ ${#base[@]} -eq 2 ] || exit 1
revision=$(git rev-parse HEAD)
git diff --quiet HEAD || revision="$revision-dirty"
secret=()
if [ -n "${PIP_CA:-}" ]; then secret=(--secret "id=pip_ca,src=$PIP_CA"); fi
# The image the tag named before this build: removed once the new one has the tag, so
# that rebuilding does not leave a dangling copy behind (2 GB CPU, 7 GB GPU each time; the
# rebuilds of one day filled this machine's disk).
previous=$("$engine" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
echo "building $tag on ${base[0]} at $revision"
# shellcheck disable=SC2086  # $build is a command with its arguments
$build --network host -f infra/docker/Dockerfile "${secret[@]}" \
  --build-arg "BASE_IMAGE=${base[0]}" --build-arg "BASE_DIGEST=${base[1]}" \
  --build-arg "REVISION=$revision" --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" \
  "$@" -t "$tag" .
current=$("$engine" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "$engine" image rm "$previous" >/dev/null 2>&1 || true  # still in use: kept
fi
