"""The Prefect flow ``cmcl`` (deployment ``train``): clinical, ingest, join, train, stability,
export, report, write back.

Each task wraps one pipeline function; the flow only orchestrates. A task retries (twice, 5 s
apart) only what can succeed on a second try: a transient user error (a refused connection, a
timeout, a busy SQLite file; :attr:`db.errors.UserError.transient`) or a built-in
``ConnectionError``/``TimeoutError``. A permanent error (a database that does not exist, wrong
credentials, a bad config, unusable data) fails at once, and training is never retried (a
failed fit is a real failure, and retrying it doubles the bill). No task result is persisted
(``persist_result=False``, ``cache_policy=NONE``): results hold patient-derived arrays and must
never be pickled into ``$PREFECT_HOME/storage``. The flow's only parameter is a config path;
secrets come from the environment (``CMCL_PSEUDONYM_KEY``, database passwords), never through
Prefect.

Run semantics (``cmcl_runs``; :mod:`flows.run_record`): the run row is created first (status
``running``, config without secrets, code version, device kind) and a heartbeat thread keeps it
alive. The Dask scheduler and a PACS source are checked before any work, and the clinical
records are loaded before any file is ingested, so a wrong clinical database or query, a PACS
that refuses the credentials or cannot be reached fails the run at once. Edges, latents,
variables, artifacts, metrics, counts and the data fingerprint are written in ONE transaction
that also sets ``succeeded`` (:func:`pipeline.model.results.write_results`). Any exception
marks the run ``failed`` with a PHI-free message; a killed process leaves ``running`` with a
stopped heartbeat, which the next run's start marks ``crashed`` after ``CMCL_STALE_AFTER_S``
seconds (:func:`db.write.mark_stale_runs`). A re-run on the same inputs and config creates a
new run row with the same results (training is seeded and deterministic on CPU);
``data_fingerprint`` lets SQL find identical runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from cmcl_core.estimator import CMCL
from db.errors import UserError
from db.records import ArtifactRow
from flows.compute import check_compute, run_threads, torch_threads
from flows.ingest_engine import ingest_pool
from flows.run_record import recorded_run
from flows.stability import assess_stability
from pipeline.clinical.join import JoinedCohort, join_cohort
from pipeline.clinical.source import ClinicalTable, load_clinical
from pipeline.config import Config, cache_dir_for, load_config
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.images import load_training_images
from pipeline.ingest.scan import IngestResult, TrainingImage, ingest
from pipeline.model.fit import (
    check_stability_settings,
    data_fingerprint,
    default_device,
    fit_model,
    knowledge_roles,
    posterior_means,
    save_model,
)
from pipeline.model.onnx_export import ExportResult, export_onnx
from pipeline.model.results import run_artifacts, run_metrics, write_results
from pipeline.pacs.connect import check_source
from pipeline.pseudonyms import pseudonym_key_from_env
from pipeline.report.page import write_report


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect retry condition: retry only an error that a second try can fix."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if isinstance(exc, UserError):
        return exc.transient
    return isinstance(exc, ConnectionError | TimeoutError)


# privacy: never pickle task results (patient-derived arrays) into $PREFECT_HOME/storage
_PRIVATE = dict(persist_result=False, cache_policy=NONE)
_RETRY = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)


# --- tasks: each wraps one pipeline function ------------------------------------------------


@task(name="ingest", **_PRIVATE, **_RETRY)
def ingest_task(cfg: Config, engine: sa.Engine) -> IngestResult:
    """Scan dicom.source into the catalog and the preprocessed-array cache (the per-file work on
    the Dask engine when ``compute.engine`` is dask: :mod:`flows.ingest_engine`)."""
    key = pseudonym_key_from_env()  # read here: the key never passes through Prefect
    res = ingest(cfg, key=key, engine=engine, pool=ingest_pool(cfg.compute))
    get_run_logger().info(
        "ingest: %d files, %d new/changed, %d unchanged, %d quarantined %s, %d forgotten, "
        "%d training images",
        res.found, res.catalogued, res.unchanged, res.n_quarantined, dict(res.quarantined),
        res.forgotten, len(res.images),
    )  # fmt: skip
    return res


@task(name="load-clinical", **_PRIVATE, **_RETRY)
def clinical_task(cfg: Config) -> ClinicalTable:
    """Run the clinical query read-only; pseudonymise the ids."""
    table = load_clinical(cfg.clinical, key=pseudonym_key_from_env())
    get_run_logger().info("clinical: %d records, variables %s", len(table), list(table.u_names))
    return table


@task(name="join", **_PRIVATE)
def join_task(images: Sequence[TrainingImage], clinical: ClinicalTable) -> JoinedCohort:
    """Join catalogued images to clinical records on the patient key."""
    cohort = join_cohort(images, clinical)
    get_run_logger().info("join: %s", cohort.counts)
    return cohort


@task(name="load-images", **_PRIVATE, **_RETRY)
def load_images_task(cfg: Config, cohort: JoinedCohort, out_path: Path) -> np.ndarray:
    """Stream the cohort's cached arrays into one memory-mapped ``[n, 1, S, S]`` file."""
    return load_training_images(PreprocessCache(cache_dir_for(cfg)), cohort.cache_keys, out_path)


@task(name="train", **_PRIVATE)
def train_task(cfg: Config, cohort: JoinedCohort, images: np.ndarray) -> CMCL:
    """Fit CMCL (CUDA when available); epochs and loss parts go to the run log."""
    log = get_run_logger()
    log.info("training on %s", default_device())

    def on_epoch(epoch: int, rec: dict) -> None:
        parts = " ".join(
            f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"
        )
        log.info("epoch %d: %s (%.1f s)", epoch + 1, parts, rec.get("seconds", float("nan")))

    model = fit_model(cfg, cohort, images, on_epoch=on_epoch)
    log.info("trained on device %s; edges: %s", model.device_, model.edges_)
    return model


@task(name="latents", **_PRIVATE)
def latents_task(model: CMCL, images: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Posterior means of z for the run's images, ``[n, m]``."""
    return posterior_means(model, images, u)


@task(name="export-onnx", **_PRIVATE)
def export_task(model: CMCL, images: np.ndarray, u: np.ndarray, run_dir: Path) -> ExportResult:
    """Export encoder/decoder to ONNX; parity against PyTorch on the run's data."""
    return export_onnx(model.encoder_module(), model.decoder_module(), images, u, run_dir)


@task(name="save-model", **_PRIVATE)
def save_model_task(model: CMCL, run_dir: Path) -> Path:
    """Save the fitted estimator as model.pt in the run folder."""
    return save_model(model, run_dir)


@task(name="report", **_PRIVATE)
def report_task(
    run_dir: Path, run_id: int, model: CMCL, images: np.ndarray, u: np.ndarray, metrics: dict
) -> Path:
    """DAG picture, intervention grids, saliency maps, metrics.json, index.html."""
    return write_report(run_dir, run_id=run_id, model=model, images=images, u=u, metrics=metrics)


@task(name="write-back", **_PRIVATE, **_RETRY)
def write_back_task(
    engine: sa.Engine,
    run_id: int,
    model: CMCL,
    cohort: JoinedCohort,
    z: np.ndarray,
    artifacts: list[ArtifactRow],
    metrics: dict[str, Any],
    fingerprint: str,
) -> None:
    """Edges, latents, variables, artifacts, metrics and 'succeeded' in one transaction."""
    write_results(
        engine, run_id, model=model, cohort=cohort, z=z, artifacts=artifacts,
        metrics=metrics, data_fingerprint=fingerprint,
    )  # fmt: skip


# --- the flow -------------------------------------------------------------------------------


@flow(name="cmcl", persist_result=False, log_prints=False)
def cmcl_flow(config: str) -> dict[str, Any]:
    """The CMCL pipeline on one config file (see the module docstring for run semantics).

    Args:
        config: path of the YAML config (on the machine that runs the flow).

    Returns:
        ``{"run_id", "status", "report", "edges", "device", "seconds"}`` (no patient data).
    """
    t0 = time.perf_counter()
    cfg = load_config(config)
    pseudonym_key_from_env()  # fail before any work when the key is missing
    check_compute(cfg.compute)  # an unreachable Dask scheduler, before any work
    check_source(cfg.dicom)  # a PACS that refuses us or cannot be reached, before any work
    check_stability_settings(cfg)
    threads = run_threads(cfg.compute)  # the CPUs this run is given, not the host's
    get_run_logger().info("torch uses %d CPU thread(s)", threads)
    with torch_threads(threads), recorded_run(cfg, device=default_device()) as run:
        clinical = clinical_task(cfg)  # first: a wrong clinical source costs no ingest
        knowledge_roles(cfg, clinical.u_names)  # unknown names in knowledge, before ingest
        ingested = ingest_task(cfg, run.engine)
        cohort = join_task(ingested.images, clinical)
        run.fingerprint = data_fingerprint(cohort)
        images = load_images_task(cfg, cohort, run.work / "images.npy")
        model = train_task(cfg, cohort, images)
        t_stability = time.perf_counter()
        model.set_stability(assess_stability(cfg, model, run.work / "images.npy", cohort.u))
        stability_seconds = time.perf_counter() - t_stability
        z = latents_task(model, images, cohort.u)
        exported = export_task(model, images, cohort.u, run.dir)
        model_file = save_model_task(model, run.dir)
        metrics = run_metrics(model, cohort, ingested, exported)
        index = report_task(run.dir, run.id, model, images, cohort.u, metrics)
        artifacts = run_artifacts(run.dir, exported, model_file, index)
        metrics["seconds"] = time.perf_counter() - t0
        metrics["stability_seconds"] = stability_seconds  # of "seconds"
        write_back_task(run.engine, run.id, model, cohort, z, artifacts, metrics, run.fingerprint)
    seconds = time.perf_counter() - t0
    get_run_logger().info("run %d succeeded in %.1f s; report %s", run.id, seconds, index)
    return {
        "run_id": run.id,
        "status": "succeeded",
        "report": str(index),
        "edges": [list(e) for e in model.edges_],
        "edge_rows": [
            {
                "source": e.source,
                "target": e.target,
                "weight": e.weight,
                "orientation": e.orientation.value,
                "stability": e.stability,
                "direction_agreement": e.direction_agreement,
            }
            for e in model.edge_table_
        ],  # fmt: skip
        "latent_roles": {z: role.value for z, role in model.latent_roles_.items()},
        "device": str(model.device_),
        "seconds": seconds,
    }
