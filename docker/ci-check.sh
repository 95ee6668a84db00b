#!/usr/bin/env bash
# CI's container step: build localhost/cmcl:cpu without a registry (docker/build-offline.sh),
# then, as the image's non-root user:
#   1. `cmcl demo` in the container, its cohort, results database and report in the mounted
#      ./container-work/ci/demo; checks the demo's edges against the truth (SHD <= 2 and
#      TPR >= 0.5, as tests/flows/test_demo.py) and that the report and the edges table exist;
#   2. `cmcl run` on that cohort's DICOM files mounted read-only at /dicom (its clinical
#      database too), the results database and report written to ./container-work/ci/ro;
#      checks that the run succeeded with edges and a report, and that /dicom is not writable.
# Prints the build time, the image size and each step's wall time. Exit status 0 when all hold.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMCL_PSEUDONYM_KEY="${CMCL_PSEUDONYM_KEY:-$(printf 'c%.0s' $(seq 64))}"
export COLUMNS=200 # one line per printed result, so the scores can be read back
t0=$(date +%s)
docker/build-offline.sh
t_build=$(($(date +%s) - t0))

work=container-work/ci
rm -rf "$work"
mkdir -p "$work"
fail() { echo "container check FAILED: $*" >&2; exit 1; }

echo "== 1. cmcl demo in the container"
t1=$(date +%s)
CMCL_PODMAN_ARGS="--env CMCL_PSEUDONYM_KEY --env COLUMNS" \
  docker/run-local.sh demo --workdir /work/ci/demo | tee "$work/demo.log"
t_demo=$(($(date +%s) - t1))
shd=$(grep -o 'SHD [0-9]*' "$work/demo.log" | head -n1 | cut -d' ' -f2)
tpr=$(grep -o 'TPR [0-9.]*' "$work/demo.log" | head -n1 | cut -d' ' -f2)
[ -n "$shd" ] && [ -n "$tpr" ] || fail "the demo printed no SHD/TPR line"
python3 - "$shd" "$tpr" <<'PY' || fail "demo edges off the truth: SHD $shd, TPR $tpr (want SHD <= 2, TPR >= 0.5)"
import sys
shd, tpr = float(sys.argv[1]), float(sys.argv[2])
sys.exit(0 if shd <= 2 and tpr >= 0.5 else 1)
PY
ls "$work"/demo/reports/run-*/index.html >/dev/null 2>&1 || fail "no report index.html from the demo"
python3 - "$work/demo/results.db" <<'PY' || fail "no edges in the demo's results database"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
n = con.execute("SELECT count(*) FROM cmcl_edges e JOIN cmcl_runs r ON r.id = e.run_id "
                "WHERE r.status = 'succeeded'").fetchone()[0]
print(f"cmcl_edges rows of succeeded runs: {n}")
sys.exit(0 if n > 0 else 1)
PY

echo "== 2. cmcl run with the DICOM files mounted read-only"
mkdir -p "$work/ro"
cat >"$work/ro/config.yaml" <<'YAML'
dicom: {source: /dicom, image_size: 32, workers: 2}
clinical:
  url: sqlite:////clinical/clinical.db
  query: SELECT mrn, covid, age, crp, spo2 FROM clinical_records
  id_column: mrn
  variables: {covid: binary, age: continuous, crp: continuous, spo2: continuous}
results: {url: sqlite:////work/ci/ro/results.db, report_dir: /work/ci/ro/reports}
model: {latent_dim: 6, epochs: 8, min_epochs: 8, batch_size: 32}
stability: null
seed: 7
YAML
mkdir -p "$work/clinical" && cp "$work/demo/clinical.db" "$work/clinical/"
ro="-v $PWD/$work/demo/dicom:/dicom:ro -v $PWD/$work/clinical:/clinical:ro"
CMCL_PODMAN_ARGS="$ro --entrypoint python3" docker/run-local.sh -c "
import os, sys
assert os.getuid() != 0, 'the container runs as root'
try:
    open('/dicom/probe', 'w')
except OSError:
    print(f'uid {os.getuid()}; /dicom is read-only')
else:
    sys.exit('/dicom is writable')
" || fail "the container user is root or /dicom is writable"
t2=$(date +%s)
CMCL_PODMAN_ARGS="$ro --env CMCL_PSEUDONYM_KEY" \
  docker/run-local.sh run --config /work/ci/ro/config.yaml | tee "$work/ro.log"
t_ro=$(($(date +%s) - t2))
ls "$work"/ro/reports/run-*/index.html >/dev/null 2>&1 || fail "no report from the read-only run"
python3 - "$work/ro/results.db" <<'PY' || fail "the read-only run left no succeeded run"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
ok = con.execute("SELECT count(*) FROM cmcl_runs WHERE status = 'succeeded'").fetchone()[0]
images = con.execute("SELECT count(*) FROM cmcl_images").fetchone()[0]
print(f"succeeded runs: {ok}, catalogued images: {images}")
sys.exit(0 if ok == 1 and images > 0 else 1)
PY
echo "container check passed: build ${t_build} s, demo ${t_demo} s (SHD $shd, TPR $tpr)," \
  "read-only run ${t_ro} s, total $(($(date +%s) - t0)) s"
