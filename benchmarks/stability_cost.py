"""What edge stability adds to a run's wall time: ``cmcl run`` with and without resampling.

For each cohort (the demo's: 1000 patients, graph 4/10, 32x32, 40 epochs; and the ``cxr``
cohort at 1,500 patients) the same config runs twice in child processes, once with
``stability: null`` and once with the default ``stability`` (or ``--resamples``), alternating
the order per repeat so that a drift in the machine's load does not favour one side. The
figure is the run's own wall time as recorded in ``cmcl_runs.metrics["seconds"]`` (the flow,
without the temporary Prefect API's start-up), and the ratio with / without.

``--within-run`` runs once per cohort, with stability, and takes the ratio from that run alone:
``seconds / (seconds - stability_seconds)`` (the flow records how long the resampling took).
It halves the cost and is immune to a drift in load between two runs; it does not see any
effect the resampling has on the rest of the run (there is none by construction: the
resamples start after training and change nothing the later steps compute).

Example::

    python -m benchmarks.stability_cost --out benchmarks/results/stability_cost
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import yaml

from benchmarks.child_run import cmcl_run
from db.engine import results_engine
from db.read import latest_run
from flows.demo import DEMO_IMAGE_SIZE, DEMO_MODEL, DEMO_SEED
from pipeline.synthetic.cohort import make_synthetic_cohort

COHORTS = {
    "demo": dict(n_patients=1000, setting="4/10", seed=DEMO_SEED),
    "cxr-1500": dict(n_patients=1500, setting="cxr", seed=0),
}


def run_once(config: Path, stability: dict | None, work: Path) -> dict:
    """One ``cmcl run``; returns the run's metrics (``seconds``, ``stability_seconds``, ...)."""
    data = yaml.safe_load(config.read_text())
    data["stability"] = stability
    db = work / f"results-{'on' if stability else 'off'}.db"
    db.unlink(missing_ok=True)
    data["results"] = {"url": f"sqlite:///{db}", "report_dir": str(work / "reports")}
    path = work / "config-run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cmcl_run(path)
    with results_engine(f"sqlite:///{db}") as engine:
        return latest_run(engine)["metrics"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=list(COHORTS))
    p.add_argument("--resamples", type=int, default=None, help="default: the config default")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--within-run", action="store_true", help="one run per cohort (see above)")
    p.add_argument("--work", type=Path, default=Path("/tmp/cmcl-stability-cost"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/stability_cost"))
    args = p.parse_args(argv)
    stability = {"level": "dag"} | ({"resamples": args.resamples} if args.resamples else {})
    records = []
    load_start = os.getloadavg()
    for name in args.cohorts:
        work = args.work / name
        info = make_synthetic_cohort(
            work / "cohort", image_size_dicom=DEMO_IMAGE_SIZE, **COHORTS[name]
        )
        data = yaml.safe_load(info.config_path.read_text())
        data["model"] = dict(
            DEMO_MODEL,
            latent_dim=data.get("model", {}).get("latent_dim")
            or json.loads(info.truth_path.read_text())["m"],
        )
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        if args.within_run:
            metrics = run_once(config, stability, work)
            on, stab = float(metrics["seconds"]), float(metrics["stability_seconds"])
            records.append({"cohort": name, "repeat": "within run", "on": on, "off": on - stab,
                            "ratio": on / (on - stab)})  # fmt: skip
            print(f"{name}: {on:.0f} s, of which stability {stab:.0f} s", flush=True)
            continue
        for rep in range(args.repeats):
            order = [None, stability] if rep % 2 == 0 else [stability, None]
            seconds = {}
            for st in order:
                t0 = time.time()
                seconds["on" if st else "off"] = float(run_once(config, st, work)["seconds"])
                print(
                    f"{name} repeat {rep} stability {'on' if st else 'off'}: "
                    f"{seconds['on' if st else 'off']:.0f} s (process {time.time() - t0:.0f} s)",
                    flush=True,
                )
            records.append(
                {"cohort": name, "repeat": rep, **seconds, "ratio": seconds["on"] / seconds["off"]}
            )
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.stability_cost " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    load = os.getloadavg()
    result = {
        "command": cmd,
        "date": time.strftime("%Y-%m-%d"),
        "stability": stability,
        "loadavg_at_start": load_start,
        "loadavg_at_end": load,
        "records": records,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# Wall time of `cmcl run` with and without edge stability ({result['date']})",
        "",
        f"Command: `{cmd}`; stability {stability}; 1-minute load average at the start "
        f"{load_start[0]:.1f}, at the end {load[0]:.1f} on 2 cores.",
        "",
        "| cohort | repeat | without (s) (within run: the run less its resampling) | with (s) "
        "| ratio |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['cohort']} | {r['repeat']} | {r['off']:.0f} | {r['on']:.0f} | {r['ratio']:.2f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
