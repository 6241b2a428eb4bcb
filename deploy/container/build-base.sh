#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim-bookworm from Debian packages, for machines that cannot
# pull from Docker Hub (the Dockerfile takes it through its PYTHON_IMAGE build argument):
#
#   deploy/container/build-base.sh [IMAGE]      # default localhost/aicreds-python-base:3.11-bookworm
#   make image PYTHON_IMAGE=localhost/aicreds-python-base:3.11-bookworm
#
# Needs root, debootstrap and podman. An existing image is kept (set REBUILD=1 to replace it).
# The machine's CA bundle (Debian's /etc/ssl/certs/ca-certificates.crt) is copied in and
# PIP_CERT points at it, so pip trusts a TLS-intercepting proxy this machine trusts. That is
# right for a CI build on this machine and wrong for an image you ship: build production
# images from the official base.
set -euo pipefail

IMAGE=${1:-localhost/aicreds-python-base:3.11-bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
ENGINE=${CONTAINER_ENGINE:-podman}

if [ "${REBUILD:-0}" != 1 ] && "$ENGINE" image exists "$IMAGE" 2>/dev/null; then
  echo "base image $IMAGE exists (REBUILD=1 to rebuild it)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "build-base.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build-base.sh: debootstrap needs root" >&2; exit 1; }

started=$(date +%s)
rootfs=$(mktemp -d /var/tmp/aicreds-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase \
  --include=python3.11,python3-venv,python-is-python3,ca-certificates,passwd \
  "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
if [ -f "$HOST_CA" ]; then
  cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
# What a runtime image never needs: package lists and caches, documentation, locales.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
tar -C "$rootfs" -c . | "$ENGINE" import --quiet \
  --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV=LANG=C.UTF-8' \
  --change 'ENV=PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD=["python3"]' \
  - "$IMAGE" >/dev/null
echo "built base image $IMAGE in $(( $(date +%s) - started )) s"
