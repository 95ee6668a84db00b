#!/usr/bin/env bash
# Build the CPU image localhost/cmcl:cpu with podman, without a Docker daemon or a registry:
#   1. a Debian bookworm base image with python3 and venv, made by debootstrap (a Debian
#      mirror, plain HTTP) and `podman import`ed as localhost/debian-base:bookworm;
#   2. a wheelhouse in docker/wheelhouse: `pip download` of the CPU torch wheel and of every
#      dependency of `.[cpu]`, pinned by docker/constraints.txt;
#   3. `podman build --pull=never` of docker/Dockerfile.cpu on that base: no network in RUN.
# Each step is skipped when its result is already there (CMCL_REBUILD_BASE=1 redoes step 1).
# Needs root (debootstrap) and: apt-get install -y podman buildah runc debootstrap
# Prints the build's wall time and the image size. The runtime settings this host needs are in
# docker/podman-env.sh, which docker/run-local.sh reads too.
set -euo pipefail
cd "$(dirname "$0")/.."
. docker/podman-env.sh

IMAGE="${CMCL_IMAGE:-localhost/cmcl:cpu}"
BASE="${CMCL_BASE_IMAGE:-localhost/debian-base:bookworm}"
TORCH_VERSION="${CMCL_TORCH_VERSION:-2.13.0}"
MIRROR="${CMCL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
t0=$(date +%s)

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: $tool is missing; install it with: apt-get install -y podman buildah runc debootstrap" >&2
    exit 2
  }
done

# 1. Base image.
if [ "${CMCL_REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE"; then
  rootfs="$CMCL_BUILD_DIR/rootfs"
  rm -rf "$rootfs"
  echo "debootstrap bookworm (minbase, python3, python3-venv) from $MIRROR ..."
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$MIRROR" \
    >"$CMCL_BUILD_DIR/debootstrap.log" 2>&1 || {
    tail -n 30 "$CMCL_BUILD_DIR/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$rootfs"
  echo "base image $BASE imported"
fi

# 2. Wheelhouse: torch pinned in the same resolve, so nothing pulls a CUDA build; redone only
#    when pyproject.toml, the constraints or the torch version change.
stamp="$(cat pyproject.toml docker/constraints.txt docker/build-offline.sh | sha256sum | cut -c1-16)-$TORCH_VERSION"
if [ "$(cat docker/wheelhouse/.stamp 2>/dev/null)" != "$stamp" ]; then
  echo "filling docker/wheelhouse (torch==$TORCH_VERSION CPU and .[cpu], pinned) ..."
  find docker/wheelhouse -name '*.whl' -delete
  # async-timeout: redis needs it below Python 3.11.3 (Debian bookworm has 3.11.2), a marker
  # the host's Python may not meet, so pip would not fetch it for the image.
  python3 -m pip download --quiet --disable-pip-version-check --dest docker/wheelhouse \
    --only-binary=:all: "torch==$TORCH_VERSION" setuptools wheel "async-timeout>=4.0.3"
  python3 -m pip download --quiet --disable-pip-version-check --dest docker/wheelhouse \
    --constraint docker/constraints.txt "torch==$TORCH_VERSION" ".[cpu]"
  if ls docker/wheelhouse | grep -q -E '^(nvidia|triton)'; then
    echo "error: CUDA wheels in docker/wheelhouse; the CPU torch wheel was not picked" >&2
    exit 1
  fi
  echo "$stamp" >docker/wheelhouse/.stamp
fi
case "$(ls docker/wheelhouse)" in
  *torch-"$TORCH_VERSION"*) ;;
  *) echo "error: no torch $TORCH_VERSION wheel in docker/wheelhouse" >&2; exit 1 ;;
esac

# 3. The image.
echo "podman build $IMAGE ..."
podman build --pull=never --build-arg "BASE_IMAGE=$BASE" \
  --build-arg "TORCH_VERSION=$TORCH_VERSION" -f docker/Dockerfile.cpu -t "$IMAGE" .
t1=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE in $((t1 - t0)) s; image size $((size / 1000000)) MB"
