"""Peak memory of ``cmcl run`` on a generated cohort (the demo's size, 20k images, ...).

Generates a synthetic cohort with ``pipeline.synthetic.cohort.make_synthetic_cohort``
(64x64 images by default), runs ``cmcl run --config`` in a child process and samples, every
0.5 s from ``/proc``, the resident set size of that process (its own peak: ``VmHWM``) and of
its whole process tree (the pipeline plus Prefect's temporary API server and ingest workers).
Linux only.

    .venv/bin/python benchmarks/run_memory.py --patients 500 --image-size 32 --epochs 12
    .venv/bin/python benchmarks/run_memory.py --patients 20000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml


def _tree_rss_kb(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(d), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--latent-dim", type=int, default=6)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cmcl-run-memory"))
    ap.add_argument("--out", type=Path, default=None, help="append the result as JSON lines")
    args = ap.parse_args()
    from pipeline.synthetic.cohort import make_synthetic_cohort

    t0 = time.perf_counter()
    info = make_synthetic_cohort(
        args.workdir / f"n{args.patients}",
        n_patients=args.patients,
        image_size_dicom=args.image_size,
        seed=0,
    )
    gen_s = time.perf_counter() - t0
    cfg = yaml.safe_load(info.config_path.read_text())
    cfg["model"] = {
        "latent_dim": args.latent_dim,
        "epochs": args.epochs,
        "min_epochs": args.epochs,
        "dag_warmup_epochs": min(3, args.epochs),
    }
    for stale in ("results.db",):
        (info.out_dir / stale).unlink(missing_ok=True)
    info.config_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CMCL_PSEUDONYM_KEY": secrets.token_hex(32), "MPLBACKEND": "Agg"}
    cmcl = Path(sys.executable).parent / "cmcl"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(cmcl), "run", "--config", str(info.config_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_tree = peak_self = 0
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    last = time.monotonic()
    while proc.poll() is None:
        peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
        peak_self = max(peak_self, _hwm_kb(proc.pid))
        if time.monotonic() - last > 60:  # progress, so a long run shows its peak so far
            last = time.monotonic()
            print(
                f"{time.perf_counter() - t0:.0f} s: peak RSS {peak_self / 1024:.0f} MB "
                f"(tree {peak_tree / 1024:.0f} MB)",
                flush=True,
            )
        time.sleep(0.5)
    reader.join(timeout=10)
    output = "".join(lines)
    result = {
        "patients": args.patients,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "images_expected": info.expected["images_joined"],
        "exit_status": proc.returncode,
        "generate_s": round(gen_s, 1),
        "run_wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_cmcl_run_mb": round(peak_self / 1024, 1),
        "peak_rss_process_tree_mb": round(peak_tree / 1024, 1),
    }
    print(output[-2000:])
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
