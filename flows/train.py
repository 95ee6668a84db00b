"""The Prefect flow ``cmcl`` (deployment ``train``): ingest, clinical, join, train, export,
report, write back.

Each task wraps one pipeline function. I/O tasks (DICOM files, databases) retry; training does
not (a failed fit is a real failure, and retrying it doubles the bill). No task result is
persisted (``persist_result=False``, ``cache_policy=NONE``): results hold patient-derived arrays
and must never be pickled into ``$PREFECT_HOME/storage``. The flow's only parameter is a config
path; secrets come from the environment (``CMCL_PSEUDONYM_KEY``, database
passwords), never through Prefect.

Run semantics (``cmcl_runs``): the run row is created first (status ``running``, config without
secrets, code version, device kind), a heartbeat thread keeps it alive, the data fingerprint is
recorded with the final status, and edges, latents, variables and artifacts are written in ONE
transaction that also sets ``succeeded`` (:func:`db.write.write_run_results`). Any exception
marks the run ``failed`` with a PHI-free message; a killed process leaves ``running`` with a
stopped heartbeat, which the next run's start marks ``crashed`` after ``CMCL_STALE_AFTER_S``
seconds (:func:`db.write.mark_stale_runs`). A re-run on the same inputs and config creates a new
run row with the same results (training is seeded and deterministic on CPU);
``data_fingerprint`` lets SQL find identical runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from db.errors import UserError
from pipeline.config import Config, load_config

STALE_ENV = "CMCL_STALE_AFTER_S"
DEFAULT_STALE_S = 300.0  # a 'running' run silent this long is marked crashed at the next start
HEARTBEAT_S = 15.0

_IO = dict(retries=2, retry_delay_seconds=5, persist_result=False, cache_policy=NONE)
_CPU = dict(retries=0, persist_result=False, cache_policy=NONE)


# --- tasks: each wraps one pipeline function ------------------------------------------------


@task(name="ingest", **_IO)
def ingest_task(cfg: Config, engine):
    """Scan dicom.source into the catalog and the preprocessed-array cache."""
    from pipeline.ingest.scan import ingest
    from pipeline.pseudonyms import pseudonym_key_from_env

    key = pseudonym_key_from_env()  # read here: the key never passes through Prefect

    log = get_run_logger()
    res = ingest(cfg, key=key, engine=engine)
    log.info(
        "ingest: %d files, %d new/changed, %d unchanged, %d quarantined %s, %d training images",
        res.found,
        res.catalogued,
        res.unchanged,
        res.n_quarantined,
        dict(res.quarantined),
        len(res.images),
    )
    return res


@task(name="load-clinical", **_IO)
def clinical_task(cfg: Config):
    """Run the clinical query read-only; pseudonymise the ids."""
    from pipeline.clinical.source import load_clinical
    from pipeline.pseudonyms import pseudonym_key_from_env

    table = load_clinical(cfg.clinical, key=pseudonym_key_from_env())
    get_run_logger().info("clinical: %d records, variables %s", len(table), list(table.u_names))
    return table


@task(name="join", **_CPU)
def join_task(images, clinical):
    """Join catalogued images to clinical records on the patient key."""
    from pipeline.clinical.join import join_cohort

    cohort = join_cohort(images, clinical)
    get_run_logger().info("join: %s", cohort.counts)
    return cohort


@task(name="load-images", **_IO)
def load_images_task(cfg: Config, cohort, out_path: Path) -> np.ndarray:
    """Stream the cohort's cached arrays into one memory-mapped ``[n, 1, S, S]`` file."""
    from pipeline.imaging.cache import PreprocessCache
    from pipeline.imaging.images import load_training_images
    from pipeline.ingest.scan import cache_dir_for

    return load_training_images(PreprocessCache(cache_dir_for(cfg)), cohort.cache_keys, out_path)


@task(name="train", **_CPU)
def train_task(cfg: Config, cohort, images: np.ndarray):
    """Fit CMCL (CUDA when available); epochs and loss parts go to the run log."""
    from pipeline.model.fit import fit_model

    log = get_run_logger()
    import torch

    log.info("training on %s", "cuda" if torch.cuda.is_available() else "cpu")

    def on_epoch(epoch: int, rec: dict) -> None:
        parts = " ".join(
            f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"
        )
        log.info("epoch %d: %s (%.1f s)", epoch + 1, parts, rec.get("seconds", float("nan")))

    model = fit_model(cfg, cohort, images, on_epoch=on_epoch)
    log.info("trained on device %s; edges: %s", model.device_, model.edges_)
    return model


@task(name="export-onnx", **_IO)
def export_task(model, images: np.ndarray, u: np.ndarray, run_dir: Path):
    """Export encoder/decoder to ONNX; parity against PyTorch on the run's data."""
    from pipeline.model.onnx_export import export_onnx

    return export_onnx(model.encoder_module(), model.decoder_module(), images, u, run_dir)


@task(name="report", **_IO)
def report_task(run_dir: Path, run_id: int, model, images, u, metrics: dict) -> Path:
    """DAG picture, intervention grids, saliency maps, metrics.json, index.html."""
    from pipeline.report.page import write_report

    return write_report(run_dir, run_id=run_id, model=model, images=images, u=u, metrics=metrics)


@task(name="write-back", **_IO)
def write_back_task(engine, run_id: int, model, cohort, z, artifacts, metrics: dict) -> None:
    """Edges, latents, variables, artifacts and 'succeeded' in one transaction."""
    from db.write import write_run_results
    from pipeline.model.fit import result_rows

    edges, variables, latents = result_rows(model, cohort, z)
    write_run_results(
        engine,
        run_id,
        edges=edges,
        latents=latents,
        variables=variables,
        artifacts=artifacts,
        metrics=metrics,
    )


# --- the flow -------------------------------------------------------------------------------


def _stale_after() -> float:
    try:
        return float(os.environ.get(STALE_ENV, DEFAULT_STALE_S))
    except ValueError:
        return DEFAULT_STALE_S


def _history_summary(history: list[dict]) -> dict[str, Any]:
    if not history:
        return {"epochs": 0}
    last = history[-1]
    out: dict[str, Any] = {"epochs": len(history)}
    out |= {f"final_{k}": v for k, v in last.items() if isinstance(v, int | float)}
    out["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in history))
    return out


@flow(name="cmcl", persist_result=False, log_prints=False)
def cmcl_flow(config: str) -> dict[str, Any]:
    """The CMCL pipeline on one config file (see the module docstring for run semantics).

    Args:
        config: path of the YAML config (on the machine that runs the flow).

    Returns:
        ``{"run_id", "status", "report", "edges", "device", "seconds"}`` (no patient data).
    """
    from db.engine import open_results
    from db.records import ArtifactRow
    from db.write import finish_run, keep_alive, mark_stale_runs, start_run
    from pipeline.ingest.scan import cache_dir_for
    from pipeline.model.fit import code_version, data_fingerprint
    from pipeline.pseudonyms import pseudonym_key_from_env

    t0 = time.perf_counter()
    log = get_run_logger()
    cfg = load_config(config)
    pseudonym_key_from_env()  # fail before any work when the key is missing
    engine = open_results(_expand(cfg.results.url))
    try:
        mark_stale_runs(engine, _stale_after())
        import torch

        run_id = start_run(
            engine,
            config=cfg.redacted(),
            code_version=code_version(),
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        log.info("run %d started", run_id)
        run_dir = Path(cfg.results.report_dir) / f"run-{run_id}"
        work = Path(tempfile.mkdtemp(prefix=f".run-{run_id}-", dir=_work_root(cache_dir_for(cfg))))
        fingerprint = None
        try:
            with keep_alive(engine, run_id, every_s=HEARTBEAT_S):
                ingested = ingest_task(cfg, engine)
                cohort = join_task(ingested.images, clinical_task(cfg))
                fingerprint = data_fingerprint(cohort)
                log.info("cohort: %d images, data fingerprint %s", len(cohort), fingerprint[:12])
                images = load_images_task(cfg, cohort, work / "images.npy")
                model = train_task(cfg, cohort, images)
                device = str(model.device_)
                exported = export_task(model, images, cohort.u, run_dir)
                z = model.transform(images, cohort.u)  # [n, m] posterior means
                metrics = {
                    "device": device,
                    "n_images": len(cohort),
                    "n_patients": cohort.counts.patients,
                    "join": cohort.summary(),
                    "ingest": {"found": ingested.found, "quarantined": dict(ingested.quarantined)},
                    "training": _history_summary(model.history_),
                    "onnx": exported.metrics(),
                    "n_edges": len(model.edges_),
                }
                index = report_task(run_dir, run_id, model, images, cohort.u, metrics)
                model.save(str(run_dir / "model.pt"))
                artifacts = [
                    ArtifactRow(a.name, a.relpath, a.sha256, a.size_bytes, a.kind)
                    for a in (exported.encoder, exported.decoder)
                ] + [
                    _file_artifact(run_dir, "model.pt", "torch"),
                    _file_artifact(run_dir, "index.html", "report"),
                ]
                metrics["seconds"] = time.perf_counter() - t0
                write_back_task(engine, run_id, model, cohort, z, artifacts, metrics)
                finish_run(
                    engine,
                    run_id,
                    status="succeeded",
                    n_images=len(cohort),
                    n_patients=cohort.counts.patients,
                    device=device,
                    data_fingerprint=fingerprint,
                )
        except BaseException as err:
            _record_failure(engine, run_id, err, fingerprint)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        engine.dispose()
    seconds = time.perf_counter() - t0
    log.info("run %d succeeded in %.1f s; report %s", run_id, seconds, index)
    return {
        "run_id": run_id,
        "status": "succeeded",
        "report": str(index),
        "edges": [list(e) for e in model.edges_],
        "device": device,
        "seconds": seconds,
    }


def _expand(url: str) -> str:
    from pipeline.config import expand_env

    return expand_env(url)


def _work_root(cache_root: Path) -> Path:
    cache_root.mkdir(parents=True, exist_ok=True)
    return cache_root


def _file_artifact(run_dir: Path, rel: str, kind: str):
    from db.records import ArtifactRow
    from pipeline.model.onnx_export import sha256_file

    p = run_dir / rel
    return ArtifactRow(p.name, rel, sha256_file(p), p.stat().st_size, kind)


def _record_failure(engine, run_id: int, err: BaseException, fingerprint: str | None) -> None:
    """Mark the run failed with a PHI-free message (user errors carry their own message)."""
    from db.write import finish_run

    if isinstance(err, UserError):
        msg = str(err)
    elif isinstance(err, KeyboardInterrupt):
        msg = "interrupted"
    else:
        msg = f"{type(err).__name__} (see the flow run's log)"
    try:
        finish_run(engine, run_id, status="failed", error=msg, data_fingerprint=fingerprint)
    except Exception:  # noqa: BLE001 - the original error matters more
        get_run_logger().warning("could not record the failure of run %d", run_id)


def run_command(config: Path, console=None) -> dict[str, Any]:
    """``cmcl run --config FILE``: run the flow locally, print the edges and the report path.

    Config and pseudonym key are checked before Prefect starts (a temporary local API when
    ``PREFECT_API_URL`` is unset), so a user error costs no start-up time.

    Raises:
        ConfigError, DataError, DatabaseUnavailable: a user-fixable problem.
    """
    from rich.console import Console
    from rich.table import Table

    from pipeline.pseudonyms import pseudonym_key_from_env

    console = console or Console()
    path = Path(config).resolve()
    load_config(path)
    pseudonym_key_from_env()
    from prefect.settings import temporary_settings

    # The temporary local API (no PREFECT_API_URL) gets 20 s to start by default; a busy
    # machine needs more. Its telemetry heartbeat only adds SQLite lock contention. Values set
    # in the environment or profile still win.
    quiet = {"server.ephemeral.startup_timeout_seconds": 180, "server.analytics_enabled": False}
    with temporary_settings(set_defaults=quiet):
        out = cmcl_flow(config=str(path))
    table = Table(title=f"cmcl run {out['run_id']}: learned edges (cause -> effect)")
    for col in ("source", "target", "weight"):
        table.add_column(col)
    for s, t, w in out["edges"]:
        table.add_row(s, t, f"{w:+.3f}")
    console.print(table)
    console.print(f"device: {out['device']}   wall time: {out['seconds']:.0f} s")
    console.print(f"report: {out['report']}")
    return out
