"""Two ``cmcl demo`` runs started together against one alone (target: each within 2.5x).

Torch's default thread count is the host's core count; two runs sharing the cores spin
against each other. The flow sizes torch's threads and its workers from the CPUs the run is
given (``pipeline.cpus``: affinity and cgroup quota). Three cases run one after the other,
each demo in its own work folder with the same pseudonym key:

* ``alone``: one demo, the whole machine's CPUs in its budget;
* ``together``: two demos at once, both with the whole machine in their budget (each sizes
  its threads to every core: what a user gets who starts two runs without any limit);
* ``together_split``: two demos at once, each given half the CPUs by its affinity (``taskset``,
  as a scheduler's cpuset or ``docker run --cpuset-cpus`` would), so each sizes itself to
  its half.

Per demo: its wall time and the median epoch seconds of its training (from the run folder's
``model.pt`` history). Ratios are against ``alone``. OMP_NUM_THREADS is removed from the
demos' environment so that the sizing, not the caller, decides. Usage::

    python -m benchmarks.two_demos --out benchmarks/results/two_demos.json

Prints one JSON line (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks.child_run import print_json_line

KEY = "0" * 64  # a fixed pseudonym key: the same cohort order in every demo (synthetic data)


def _demo_cmd(workdir: Path, cpus: list[int] | None) -> list[str]:
    cmd = [sys.executable, "-m", "flows.cli", "demo", "--workdir", str(workdir)]
    if cpus is None:
        return cmd
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


def _epoch_seconds(workdir: Path) -> list[float]:
    models = sorted(workdir.glob("reports/**/model.pt"))
    if not models:
        return []
    meta = json.loads(torch.load(models[-1], map_location="cpu", weights_only=True)["meta"])
    return [float(r["seconds"]) for r in meta["history"]]


def _run(workdirs: list[Path], cpus: list[list[int] | None]) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["CMCL_PSEUDONYM_KEY"] = KEY
    procs, starts = [], []
    for wd, c in zip(workdirs, cpus, strict=True):
        shutil.rmtree(wd, ignore_errors=True)
        starts.append(time.perf_counter())
        log = open(wd.with_suffix(".log"), "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(_demo_cmd(wd, c), env=env, stdout=log, stderr=log), log))
    out = []
    for (p, log), t0, wd in zip(procs, starts, workdirs, strict=True):
        rc = p.wait()
        wall = time.perf_counter() - t0
        log.close()
        epochs = _epoch_seconds(wd)
        tail = wd.with_suffix(".log").read_text()[-400:] if rc else ""
        out.append(
            {
                "rc": rc,
                "wall_s": round(wall, 1),
                "epochs": len(epochs),
                "median_epoch_s": round(statistics.median(epochs), 3) if epochs else None,
                **({"log_tail": tail} if tail else {}),
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cases", nargs="+", default=["alone", "together", "together_split"])
    args = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    split = [cpus[:half], cpus[half:] or cpus[:half]]
    tmp = Path(tempfile.mkdtemp(prefix="two-demos-"))
    result: dict = {
        "benchmark": "two_demos",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": len(cpus),
        "load_before": os.getloadavg()[0],
    }
    try:
        for case in args.cases:
            if case == "alone":
                runs = _run([tmp / "alone"], [None])
            elif case == "together":
                runs = _run([tmp / "a", tmp / "b"], [None, None])
            elif case == "together_split":
                runs = _run([tmp / "a", tmp / "b"], split)
            else:
                raise SystemExit(f"unknown case {case!r}")
            result[case] = runs
        alone = result.get("alone", [{}])[0]
        for case in ("together", "together_split"):
            if case in result and alone.get("wall_s"):
                result[f"{case}_wall_ratio"] = [
                    round(r["wall_s"] / alone["wall_s"], 2) for r in result[case]
                ]
                if alone.get("median_epoch_s"):
                    result[f"{case}_epoch_ratio"] = [
                        round(r["median_epoch_s"] / alone["median_epoch_s"], 2)
                        if r["median_epoch_s"]
                        else None
                        for r in result[case]
                    ]
        result["load_after"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_json_line(result, args.out)
    return result


if __name__ == "__main__":
    main()
