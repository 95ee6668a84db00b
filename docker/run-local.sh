#!/usr/bin/env bash
# Run `cmcl ARGS...` in the image built by docker/build-offline.sh (localhost/cmcl:cpu), as the
# image's non-root user, with ./container-work mounted at /work (writable; podman's :U gives
# the container user ownership of it). Example:  docker/run-local.sh demo --workdir /work/demo
# Extra podman options (more mounts, --env, --cpus) go in CMCL_PODMAN_ARGS, e.g.
#   CMCL_PODMAN_ARGS="-v $PWD/dicom:/dicom:ro" docker/run-local.sh run --config /work/config.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
. docker/podman-env.sh

IMAGE="${CMCL_IMAGE:-localhost/cmcl:cpu}"
mkdir -p container-work
# shellcheck disable=SC2086  # CMCL_PODMAN_ARGS is a list of options
exec podman run --rm --pull=never --init \
  -v "$PWD/container-work:/work:U" \
  ${CMCL_PODMAN_ARGS:-} \
  "$IMAGE" "$@"
