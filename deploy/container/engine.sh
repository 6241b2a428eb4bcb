# Sourced by the container scripts: picks the engine and exports $ENGINE.
# docker when a Docker engine answers, else podman; CONTAINER_ENGINE forces one.
# Returns 3 when neither can run containers here.
_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -n "${CONTAINER_ENGINE:-}" ]; then
  ENGINE=$CONTAINER_ENGINE
elif command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
  ENGINE=docker
elif command -v podman >/dev/null 2>&1 \
    && CONTAINERS_CONF=${CONTAINERS_CONF:-$_here/containers.conf} podman info >/dev/null 2>&1; then
  ENGINE=podman
else
  ENGINE=
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="$_here/containers.conf"
fi
export ENGINE
