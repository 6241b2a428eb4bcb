#!/usr/bin/env bash
# Build the aicreds image from deploy/Dockerfile: `make image` (IMAGE=aicreds:0.1.0).
#
# With docker when a Docker engine answers, else with podman. PYTHON_IMAGE names the base
# (default python:3.11-slim-bookworm); when it is unset and the official base can be neither
# found locally nor pulled (no Docker Hub), a stand-in is built once from Debian packages by
# build-base.sh and kept in the engine's image store for the next builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/container/engine.sh
if [ -z "$ENGINE" ]; then
  echo "make image: neither a Docker engine nor podman is available" >&2
  exit 3
fi

IMAGE=${IMAGE:-aicreds:0.1.0}
OFFICIAL=docker.io/library/python:3.11-slim-bookworm
STAND_IN=localhost/aicreds-python-base:3.11-bookworm
if [ -z "${PYTHON_IMAGE:-}" ]; then
  if "$ENGINE" image inspect "$OFFICIAL" >/dev/null 2>&1; then
    PYTHON_IMAGE=$OFFICIAL
  elif "$ENGINE" image inspect "$STAND_IN" >/dev/null 2>&1; then
    PYTHON_IMAGE=$STAND_IN
  elif timeout 60 "$ENGINE" pull -q "$OFFICIAL" >/dev/null 2>&1; then
    PYTHON_IMAGE=$OFFICIAL
  else
    echo "make image: cannot pull $OFFICIAL; building a stand-in from Debian packages" >&2
    CONTAINER_ENGINE=$ENGINE deploy/container/build-base.sh "$STAND_IN"
    PYTHON_IMAGE=$STAND_IN
  fi
fi

# BuildKit reads deploy/Dockerfile.dockerignore by itself; podman is told.
ignore=()
[ "$ENGINE" = podman ] && ignore=(--ignorefile deploy/Dockerfile.dockerignore)
started=$(date +%s)
"$ENGINE" build --quiet -f deploy/Dockerfile "${ignore[@]}" \
  --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -t "$IMAGE" . >/dev/null
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE with $ENGINE from $PYTHON_IMAGE in $(( $(date +%s) - started )) s;" \
  "size $(( size / 1000000 )) MB"
