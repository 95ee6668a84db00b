"""Peak memory of a folder ingest over a large cohort: does the ingesting process stay flat?

Usage (from the repository root)::

    .venv/bin/python benchmarks/ingest_memory.py --files 100000 --size 32 \
        --workdir /tmp/ingest_memory --out benchmarks/results/ingest_memory_100k.json

Writes ``--files`` small DX files (``--size`` x ``--size``, 12-bit, 4 per patient; kept in
``--workdir`` for a re-run, ``--clean`` deletes the work folder at the end), then runs
``pipeline.ingest.scan.ingest`` once in a child process (local engine, ``--workers`` worker
processes, a fresh SQLite results database and cache; the training units only counted, as
``cmcl ingest`` does), with ``--rerun`` a second time over the same database and cache (every
file unchanged), and samples, every ``--every`` seconds,
from ``/proc``: the child's resident set (``VmRSS``) and peak (``VmHWM``), the workers' summed
resident sets, and the files done so far (the ingest's progress callback). The report lists
every sample and the ingesting process's peak when 10%, 25%, 50% and 100% of the files were
done; a flat peak means that what the scan keeps per file (file lists, the catalog's keys, the
training units it returns) stays small against the process's fixed ~0.5 GB of imports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = b"benchmark-key-0123456789abcdef"


def make_files(folder: Path, n: int, size: int) -> None:
    """``n`` DX files, 4 per patient, 1,000 patients per batch folder."""
    from pipeline.synthetic.writer import Phi, write_dicom

    for i in range(n):
        pid = f"MEM{i // 4:07d}"
        write_dicom(folder / f"batch_{i // 4000:03d}" / pid / f"{i:07d}.dcm", modality="DX",
                    rows=size, columns=size, bits_stored=12, phi=Phi(patient_id=pid),
                    seed=i)  # fmt: skip


def child(source: Path, workdir: Path, workers: int, image_size: int) -> None:
    """One ingest; the progress goes to ``workdir/progress``; prints a JSON summary."""
    import resource

    from pipeline.config import config_from_dict
    from pipeline.ingest.scan import ingest

    cfg = config_from_dict(
        {
            "dicom": {"source": str(source), "workers": workers, "image_size": image_size,
                      "cache_dir": str(workdir / "cache")},
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": f"sqlite:///{workdir / 'results.db'}"},
        }
    )  # fmt: skip
    progress = workdir / "progress"

    def report(done: int, total: int) -> None:
        tmp = progress.with_suffix(".tmp")
        tmp.write_text(f"{done} {total}")
        os.replace(tmp, progress)

    t0 = time.perf_counter()
    r = ingest(cfg, key=KEY, progress=report, load_units=False)
    print(json.dumps({
        "seconds": time.perf_counter() - t0, "found": r.found, "catalogued": r.catalogued,
        "quarantined": r.n_quarantined, "images": len(r.images),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def sample(pid: int, progress: Path) -> dict:
    """One sample of the ingesting process ``pid`` and its workers (MiB)."""
    workers = 0
    for kid in _children(pid):
        try:
            workers += _status_kib(kid, "VmRSS")
        except (FileNotFoundError, ProcessLookupError):
            continue
    try:
        done = int(progress.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        done = 0
    return {"done": done, "rss_mib": _status_kib(pid, "VmRSS") / 1024,
            "peak_mib": _status_kib(pid, "VmHWM") / 1024, "workers_rss_mib": workers / 1024,
            "load": os.getloadavg()[0]}  # fmt: skip


def measure(cmd: list[str], env: dict, progress: Path, every: float) -> tuple[dict, list]:
    """Run one ingest child, sampling it every ``every`` seconds: (its summary, the samples)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        try:
            s = sample(proc.pid, progress)
        except (FileNotFoundError, ProcessLookupError):
            break  # ended between poll and read
        samples.append({"t": round(time.perf_counter() - t0, 1), **s})
        time.sleep(every)
    out, _ = proc.communicate()
    if proc.returncode:
        sys.exit(f"ingest child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), samples


def _summarise(summary: dict, samples: list, files: int) -> dict:
    """The peak when 10%, 25%, 50% and 100% of the files were done, with every sample."""
    marks = {}
    for frac in (0.1, 0.25, 0.5, 1.0):
        at = next((s for s in samples if s["done"] >= frac * files), samples[-1])
        marks[f"{round(frac * files)}"] = {k: at[k] for k in ("t", "done", "peak_mib",
                                                             "rss_mib")}  # fmt: skip
    return {
        "ingest": summary, "files_per_s": summary["found"] / summary["seconds"],
        "peak_mib_at": marks,
        "workers_rss_mib_max": max(s["workers_rss_mib"] for s in samples),
        "samples": samples,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=32, help="rows = columns of each file")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--clean", action="store_true", help="delete the work folder at the end")
    ap.add_argument("--rerun", action="store_true", help="ingest a second time (all unchanged)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ingest_memory.json")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.workdir, args.workers, args.image_size)
        return

    source, run = args.workdir / "cohort", args.workdir / "run"
    t0 = time.perf_counter()
    if not source.exists():
        make_files(source, args.files, args.size)
    generate_s = time.perf_counter() - t0
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    env = {**os.environ, "CMCL_PSEUDONYM_KEY": KEY.hex()}
    cmd = [sys.executable, __file__, "--child", str(source), "--workdir", str(run),
           "--workers", str(args.workers), "--image-size", str(args.image_size)]  # fmt: skip
    load_start = os.getloadavg()
    summary, samples = measure(cmd, env, run / "progress", args.every)
    report = {
        "date": time.strftime("%Y-%m-%d"), "files": args.files,
        "pixels": f"{args.size}x{args.size} 12-bit DX", "image_size": args.image_size,
        "workers": args.workers, "cpu_count": os.cpu_count(), "generate_s": generate_s,
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        **_summarise(summary, samples, args.files),
    }  # fmt: skip
    if args.rerun:
        (run / "progress").unlink(missing_ok=True)
        again = measure(cmd, env, run / "progress", args.every)
        report["rerun"] = {"load_average_end": os.getloadavg(),
                           **_summarise(*again, args.files)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for k, v in report.items():
        if k == "rerun":
            v = {k2: v2 for k2, v2 in v.items() if k2 != "samples"}
        if k != "samples":
            print(f"{k:>24}: {v}")
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
