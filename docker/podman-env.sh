# Sourced by docker/build-offline.sh and docker/run-local.sh: the podman settings this kind of
# host needs, in a containers.conf named by CONTAINERS_CONF (an existing CONTAINERS_CONF wins):
# - runtime runc: crun refuses hosts whose cgroups are in hybrid mode;
# - default ulimits no higher than this shell's hard limits (podman's defaults ask for more
#   than some hosts grant: "setrlimit ... Operation not permitted").
CMCL_BUILD_DIR="${CMCL_BUILD_DIR:-$PWD/.container-build}"
mkdir -p "$CMCL_BUILD_DIR"
if [ -z "${CONTAINERS_CONF:-}" ]; then
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  nproc="$(ulimit -Hu)"
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
  cat >"$CMCL_BUILD_DIR/containers.conf" <<CONF
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
CONF
  export CONTAINERS_CONF="$CMCL_BUILD_DIR/containers.conf"
fi
