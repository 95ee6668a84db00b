"""Ingest throughput against a bare pydicom loop, the cached re-run, and peak RSS vs cohort size.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ingest_throughput.py --files 5000 --small 1000 --workers 2

Generates a cohort of 256x256 12-bit DX files (a few per patient), then measures, on the same
files:

* bare loop: ``pydicom.dcmread`` + ``pixel_array`` + area resize to ``image_size``, one process;
* ``pipeline.ingest.scan.ingest`` into a fresh SQLite results database (validation, hashing,
  pseudonyms, preprocessing into the cache, catalog writes), with ``--workers`` processes;
* the cached re-run (every file unchanged);
* peak RSS of the ingesting process and of its largest worker, at ``--small`` and ``--files``
  files (each ingest runs in a fresh child process so the peaks do not mix).

Prints a table and writes JSON next to ``--out``. The ratio target (issue 4) is
``ingest files/s >= 0.5 x bare files/s``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_cohort(folder: Path, n: int, size: int) -> None:
    """``n`` DX files, 4 per patient, in patient folders."""
    # deferred: the --child process times the pipeline's own imports (pydicom among them)
    from pipeline.synthetic.writer import Phi, write_dicom

    for i in range(n):
        pid = f"BENCH{i // 4:06d}"
        write_dicom(
            folder / pid / f"{i:06d}.dcm",
            modality="DX",
            rows=size,
            columns=size,
            bits_stored=12,
            phi=Phi(patient_id=pid),
            seed=i,
        )


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the ingest workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bare_loop(folder: Path, image_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds for dcmread + pixel_array + area resize over every file, one process."""
    import numpy as np
    import pydicom
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    files = sorted(p for p in folder.rglob("*.dcm"))
    t0, c0 = time.perf_counter(), cpu_seconds()
    for p in files:
        arr = pydicom.dcmread(p).pixel_array.astype(np.float32)  # [H, W]
        x = torch.from_numpy(arr)[None, None]  # [1, 1, H, W]
        F.interpolate(x, size=(image_size, image_size), mode="area")  # -> [1, 1, S, S]
    return time.perf_counter() - t0, cpu_seconds() - c0


def child(source: Path, workdir: Path, workers: int, image_size: int, runs: int) -> None:
    """Run ingest ``runs`` times in this process; print JSON timings and peak RSS."""
    t0 = time.perf_counter()
    import pipeline.imaging.cache  # noqa: F401 - one-time imports (torch, MONAI) are not per-file work
    import pipeline.imaging.mri  # noqa: F401
    from db.engine import open_results
    from pipeline.config import config_from_dict, expand_env
    from pipeline.ingest.scan import ingest

    import_s = time.perf_counter() - t0

    cfg = config_from_dict(
        {
            "dicom": {
                "source": str(source),
                "workers": workers,
                "image_size": image_size,
                "cache_dir": str(workdir / "cache"),
            },
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": f"sqlite:///{workdir / 'results.db'}"},
        }
    )
    engine = open_results(expand_env(cfg.results.url))
    out = []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), cpu_seconds()
        r = ingest(cfg, key=b"benchmark-key-0123456789abcdef", engine=engine)
        out.append({"seconds": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0,
                    "found": r.found,
                    "catalogued": r.catalogued, "unchanged": r.unchanged,
                    "quarantined": r.n_quarantined})  # fmt: skip
    engine.dispose()
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "runs": out,
        "import_s": import_s,
        "peak_rss_mib_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "peak_rss_mib_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }))  # fmt: skip


def run_child(source: Path, workdir: Path, workers: int, image_size: int, runs: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", str(source), "--workdir", str(workdir),
           "--workers", str(workers), "--image-size", str(image_size),
           "--runs", str(runs)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--small", type=int, default=1000, help="smaller cohort for the RSS check")
    ap.add_argument("--size", type=int, default=256, help="rows = columns of each file")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.workdir, args.workers, args.image_size, args.runs)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cmcl-ingest-bench-"))
    big, small = work / "cohort_big", work / "cohort_small"
    t0 = time.perf_counter()
    if not big.exists():
        make_cohort(big, args.files, args.size)
    if not small.exists():
        for p in sorted(big.rglob("*.dcm"))[: args.small]:
            dst = small / p.relative_to(big)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dst)
    print(
        f"cohort: {args.files} files of {args.size}x{args.size} in {time.perf_counter() - t0:.0f} s"
    )

    bare, bare_cpu = bare_loop(big, args.image_size)
    res_small = run_child(small, work / "run_small", args.workers, args.image_size, 1)
    res_big = run_child(big, work / "run_big", args.workers, args.image_size, args.runs)
    first, rerun = res_big["runs"][0], res_big["runs"][-1]
    bare_fps, ingest_fps = args.files / bare, args.files / first["seconds"]
    report = {
        "files": args.files, "pixels": f"{args.size}x{args.size} 12-bit", "workers": args.workers,
        "cpu_count": os.cpu_count(), "image_size": args.image_size,
        "bare_loop_s": bare, "bare_files_per_s": bare_fps,
        "ingest_s": first["seconds"], "ingest_files_per_s": ingest_fps,
        "ratio_ingest_over_bare": ingest_fps / bare_fps,
        # CPU seconds per file, summed over processes: load-independent; with W free cores the
        # wall ratio approaches min(W, ...) x this ratio
        "bare_cpu_ms_per_file": 1000 * bare_cpu / args.files,
        "ingest_cpu_ms_per_file": 1000 * first["cpu_s"] / args.files,
        "cpu_ratio_bare_over_ingest": bare_cpu / first["cpu_s"],
        "one_time_import_s": res_big["import_s"],
        "cached_rerun_s": rerun["seconds"], "rerun_unchanged": rerun["unchanged"],
        "peak_rss_mib": {
            str(args.small): {k: v for k, v in res_small.items() if k.startswith("peak")},
            str(args.files): {k: v for k, v in res_big.items() if k.startswith("peak")},
        },
    }  # fmt: skip
    for k, v in report.items():
        print(f"{k:>26}: {v:.3f}" if isinstance(v, float) else f"{k:>26}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
