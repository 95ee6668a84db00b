"""Ingest throughput against a bare pydicom loop, the cached re-run, and peak RSS vs cohort size;
Dask workers, where the CPU per file goes, and a DICOMweb pull against the folder.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ingest_throughput.py --files 5000 --small 1000 --workers 2
    .venv/bin/python benchmarks/ingest_throughput.py --files 1000 --small 200 \
        --dask-workers 1,2 --breakdown 300 --pacs

Generates a cohort of 256x256 12-bit DX files (a few per patient), then measures, on the same
files:

* bare loop: ``pydicom.dcmread`` + ``pixel_array`` + area resize to ``image_size``, one process;
* ``pipeline.ingest.scan.ingest`` into a fresh SQLite results database (validation, hashing,
  pseudonyms, preprocessing into the cache, catalog writes), with ``--workers`` processes;
* the cached re-run (every file unchanged): always a second run of the same child, so
  ``--runs 1`` still reports it (it used to report the first run twice);
* peak RSS of the ingesting process and of its largest worker, at ``--small`` and ``--files``
  files (each ingest runs in a fresh child process so the peaks do not mix);
* ``--dask-workers 1,2``: the same ingest with ``compute: {engine: dask, workers: k}`` (the
  per-file work as Prefect tasks on a Dask LocalCluster), after a warm-up ingest of 4 files (so
  Prefect's temporary API is up); a second 4-file ingest times the fixed cost of one (cluster
  start, the workers' imports of torch and MONAI, cluster stop). The timed ingests then run on a
  warm engine (``with EnginePool(...)``: cluster started and imports done before the timer,
  timed apart as ``start_s``), so files/s measures the per-file work; ``cold_files_per_s`` adds
  the start. CPU: this process and every process under it, Prefect's API server included;
* ``--breakdown N``: CPU time (``time.process_time``, one process) per stage over N files:
  read, SHA-256, parse + validate + decode, preprocessing, cache write, catalog write;
* ``--pacs``: the files uploaded to a local Orthanc (needs ``orthanc`` and
  ``orthanc-dicomweb``), then ingested from its DICOMweb URL: first pull and re-run, against the
  folder source on the same files.

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
KEY = b"benchmark-key-0123456789abcdef"


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
    """User + system CPU time of this process, its reaped children (the ingest workers) and
    the processes still running under it (a warm Dask cluster's workers, Prefect's API)."""
    import psutil  # deferred: the --child process times the pipeline's own imports

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    live = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:  # ended meanwhile: counted once reaped
            continue
        live += t.user + t.system
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


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


def child(
    source: str, workdir: Path, workers: int, image_size: int, runs: int, engine_kind: str
) -> None:
    """Run ingest ``runs`` times in this process; print JSON timings and peak RSS."""
    t0 = time.perf_counter()
    import pipeline.imaging.cache  # noqa: F401 - one-time imports (torch, MONAI) are not per-file work
    import pipeline.imaging.mri  # noqa: F401
    from db.engine import open_results
    from flows.ingest_engine import EnginePool, ingest_pool
    from pipeline.config import config_from_dict, expand_env
    from pipeline.ingest.scan import ingest

    import_s = time.perf_counter() - t0

    cfg = config_from_dict(
        {
            "dicom": {
                "source": source,
                "workers": workers,
                "image_size": image_size,
                "cache_dir": str(workdir / "cache"),
            },
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": f"sqlite:///{workdir / 'results.db'}"},
            "compute": {"engine": engine_kind, "workers": workers},
        }
    )
    engine = open_results(expand_env(cfg.results.url))
    fixed_s = start_s = 0.0
    pool = ingest_pool(cfg.compute)
    if engine_kind == "dask":  # warm Prefect's API up, then time the fixed cost of an ingest
        tiny = cfg.dicom.model_copy(update={"source": Path(source).parent / "cohort_tiny"})
        for i in range(2):  # the second: cluster start, worker imports, 4 files, cluster stop
            db = cfg.results.model_copy(update={"url": f"sqlite:///{workdir / f'tiny{i}.db'}"})
            t0 = time.perf_counter()
            ingest(cfg.model_copy(update={"dicom": tiny, "results": db}), key=KEY,
                   pool=ingest_pool(cfg.compute))  # fmt: skip
            fixed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = EnginePool(cfg.compute).__enter__()  # warm: cluster up, imports done
        start_s = time.perf_counter() - t0
    out = []
    try:
        for _ in range(runs):
            t0, c0 = time.perf_counter(), cpu_seconds()
            r = ingest(cfg, key=KEY, engine=engine, pool=pool)
            out.append({"seconds": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0,
                        "found": r.found,
                        "catalogued": r.catalogued, "unchanged": r.unchanged,
                        "quarantined": r.n_quarantined, "load": os.getloadavg()})  # fmt: skip
    finally:
        if pool is not None:
            pool.__exit__(None, None, None)
    engine.dispose()
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "runs": out,
        "fixed_s": fixed_s,
        "start_s": start_s,
        "import_s": import_s,
        "peak_rss_mib_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "peak_rss_mib_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }))  # fmt: skip


def run_child(
    source: Path | str, workdir: Path, workers: int, image_size: int, runs: int,
    engine: str = "local", env: dict | None = None,
) -> dict:  # fmt: skip
    """One ingest process: a first run and ``runs - 1`` (at least one) cached re-runs."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", str(source), "--workdir", str(workdir),
           "--workers", str(workers), "--image-size", str(image_size),
           "--runs", str(max(2, runs)), "--engine", engine]  # fmt: skip
    env = {**os.environ, "CMCL_PSEUDONYM_KEY": KEY.hex(),  # the Dask workers read it
           "PREFECT_HOME": str(workdir / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300", **(env or {})}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        sys.exit(f"ingest child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_breakdown(folder: Path, n: int, image_size: int, workdir: Path) -> dict[str, float]:
    """CPU ms per file of each ingest stage, one process, over the first ``n`` files."""
    from db.engine import open_results
    from pipeline.config import DicomConfig
    from pipeline.dicom.validate import InspectSettings, inspect_bytes, read_bytes, sha256_bytes
    from pipeline.imaging.cache import PreprocessCache
    from pipeline.imaging.preprocess import PreprocessSpec, preprocess_dataset
    from pipeline.ingest.catalog import CatalogWriter, image_row

    files = sorted(folder.rglob("*.dcm"))[:n]
    spec = PreprocessSpec.from_config(DicomConfig(source=str(folder), image_size=image_size))
    settings = InspectSettings(KEY, ("CR", "DX", "MR"), True)
    cache = PreprocessCache(workdir / "breakdown_cache")
    engine = open_results(f"sqlite:///{workdir / 'breakdown.db'}")
    writer = CatalogWriter(engine)
    t = dict.fromkeys(("read", "sha256", "parse_validate_decode", "preprocess",
                       "cache_write", "catalog_write"), 0.0)  # fmt: skip

    def clock(stage: str, c0: float) -> float:
        c1 = time.process_time()
        t[stage] += c1 - c0
        return c1

    for i, p in enumerate(files):
        c = time.process_time()
        data = read_bytes(p, f"{i:064x}")
        c = clock("read", c)
        digest = sha256_bytes(data)
        c = clock("sha256", c)
        acc = inspect_bytes(data, f"{i:064x}", settings, digest)
        c = clock("parse_validate_decode", c)
        arr = preprocess_dataset(acc.dataset, spec, acc.pixels)  # [1, S, S]
        c = clock("preprocess", c)
        ckey = cache.key(digest, spec)
        cache.put(ckey, arr)
        c = clock("cache_write", c)
        writer.image(image_row(acc.light(), ckey))
        clock("catalog_write", c)
    c = time.process_time()
    writer.flush()
    clock("catalog_write", c)
    engine.dispose()
    return {k: 1000 * v / len(files) for k, v in t.items()}


def pacs_upload(folder: Path, workdir: Path):
    """Start Orthanc in ``workdir`` and upload every file of ``folder``; returns the context
    manager (entered) and the upload seconds."""
    sys.path.insert(0, str(ROOT))
    from tests.pipeline.pacs.orthanc import PASSWORD, USER, missing, running_orthanc

    why = missing()
    if why:
        sys.exit(f"--pacs: {why}")
    import requests

    ctx = running_orthanc(workdir)
    server = ctx.__enter__()
    t0 = time.perf_counter()
    with requests.Session() as http:
        http.auth = (USER, PASSWORD)
        for p in sorted(folder.rglob("*.dcm")):
            http.post(f"{server.rest}/instances", data=p.read_bytes()).raise_for_status()
    return ctx, server, PASSWORD, time.perf_counter() - t0


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
    ap.add_argument("--dask-workers", default="", help="e.g. 1,2: also ingest on Dask")
    ap.add_argument("--breakdown", type=int, default=0, help="files for the CPU breakdown")
    ap.add_argument("--pacs", action="store_true", help="also pull the files from Orthanc")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.workdir, args.workers, args.image_size, args.runs, args.engine)
        return

    load_start = os.getloadavg()
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
    first, rerun = res_big["runs"][0], res_big["runs"][1]
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
        "speedup_cached_rerun": first["seconds"] / rerun["seconds"],
        "peak_rss_mib": {
            str(args.small): {k: v for k, v in res_small.items() if k.startswith("peak")},
            str(args.files): {k: v for k, v in res_big.items() if k.startswith("peak")},
        },
    }  # fmt: skip
    report["load_average_start"] = load_start
    if args.breakdown:
        report["cpu_ms_per_file_by_stage"] = cpu_breakdown(big, args.breakdown, args.image_size,
                                                           work)  # fmt: skip
    for k in filter(None, args.dask_workers.split(",")):
        w = int(k)
        tiny = work / "cohort_tiny"  # the child's warm-up (Prefect's API) reads it
        if not tiny.exists():
            for p in sorted(big.rglob("*.dcm"))[:4]:
                dst = tiny / p.relative_to(big)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, dst)
        res = run_child(big, work / f"dask{w}", w, args.image_size, 2, "dask")
        secs, start = res["runs"][0]["seconds"], res["start_s"]
        report[f"dask_{w}_workers"] = {
            "ingest_s": secs, "files_per_s": args.files / secs,
            "start_s": start, "cold_files_per_s": args.files / (secs + start),
            "fixed_s_per_4_file_ingest": res["fixed_s"],
            "cpu_ms_per_file_all_processes": 1000 * res["runs"][0]["cpu_s"] / args.files,
            "cached_rerun_s": res["runs"][1]["seconds"], "load": res["runs"][0]["load"],
        }  # fmt: skip
    if "dask_1_workers" in report and "dask_2_workers" in report:
        one, two = report["dask_1_workers"], report["dask_2_workers"]
        report["dask_2_over_1"] = two["files_per_s"] / one["files_per_s"]
        report["dask_2_over_1_cold"] = two["cold_files_per_s"] / one["cold_files_per_s"]
    if args.pacs:
        ctx, server, password, upload_s = pacs_upload(big, work / "orthanc")
        try:
            url = server.dicomweb_source()
            res = run_child(url, work / "pacs", args.workers, args.image_size, 2,
                            env={"PACS_PASSWORD": password})  # fmt: skip
        finally:
            ctx.__exit__(None, None, None)
        pull, again = res["runs"][0], res["runs"][1]
        report["dicomweb"] = {
            "upload_s": upload_s, "pull_ingest_s": pull["seconds"],
            "pull_files_per_s": args.files / pull["seconds"],
            "folder_files_per_s": ingest_fps,
            "ratio_pull_over_folder": (args.files / pull["seconds"]) / ingest_fps,
            "pull_cpu_ms_per_file": 1000 * pull["cpu_s"] / args.files,
            "rerun_s": again["seconds"], "rerun_unchanged": again["unchanged"],
        }  # fmt: skip
    report["load_average_end"] = os.getloadavg()
    for k, v in report.items():
        print(f"{k:>26}: {v:.3f}" if isinstance(v, float) else f"{k:>26}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
