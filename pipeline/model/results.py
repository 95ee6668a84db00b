"""What a finished run stores: its metrics, its files, and its rows in the results database.

:func:`run_metrics` and :func:`run_artifacts` assemble what the report and ``cmcl_runs`` show;
:func:`write_results` turns the fitted model into ``cmcl_edges``, ``cmcl_run_variables`` and
``cmcl_latents`` rows and writes them, the artifacts, the metrics, the counts and the status
``succeeded`` in one transaction (:func:`db.write.write_run_results`). Nothing here names a
patient: metrics hold counts and training figures, rows hold pseudonymous keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from cmcl_core.estimator import CMCL
from db.records import ArtifactRow, EdgeRow, LatentRow, VariableRow
from db.write import write_run_results
from pipeline.clinical.join import JoinedCohort
from pipeline.ingest.scan import IngestResult
from pipeline.model.artifacts import file_artifact
from pipeline.model.onnx_export import ExportResult


def history_summary(history: list[dict]) -> dict[str, Any]:
    """Epochs, the last epoch's figures (``final_<name>``) and the training time in seconds."""
    if not history:
        return {"epochs": 0}
    last = history[-1]
    out: dict[str, Any] = {"epochs": len(history)}
    out |= {f"final_{k}": v for k, v in last.items() if isinstance(v, int | float)}
    out["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in history))
    return out


def run_metrics(
    model: CMCL, cohort: JoinedCohort, ingested: IngestResult, exported: ExportResult
) -> dict[str, Any]:
    """The run's metrics (``cmcl_runs.metrics``, the report's ``metrics.json``): counts only."""
    return {
        "device": str(model.device_),
        "n_images": len(cohort),
        "n_patients": cohort.counts.patients,
        "join": cohort.summary(),
        "ingest": {
            "found": ingested.found,
            "quarantined": dict(ingested.quarantined),
            "forgotten": ingested.forgotten,
        },
        "training": history_summary(model.history_),
        "onnx": exported.metrics(),
        "n_edges": len(model.edges_),
        "edges": edge_summary(model),
        "latent_roles": {z: role.value for z, role in model.latent_roles_.items()},
    }


def edge_summary(model: CMCL) -> dict[str, Any]:
    """How many rows claim a direction (by orientation), and the resampling behind them."""
    table = model.edge_table_
    out: dict[str, Any] = {"rows": len(table)}
    for kind in ("knowledge", "data", "undetermined"):
        out[kind] = sum(e.orientation.value == kind for e in table)
    stab = model.stability_
    out["stability"] = None if stab is None else {"resamples": stab.resamples, "level": stab.level}
    out["roles"] = dict(model.u_roles_)
    return out


def run_artifacts(
    run_dir: Path, exported: ExportResult, model_file: Path, report_index: Path
) -> list[ArtifactRow]:
    """The run's files with their sha256: the two ONNX graphs, the model and the report."""
    return [
        exported.encoder,
        exported.decoder,
        file_artifact(model_file, run_dir, "torch"),
        file_artifact(report_index, run_dir, "report"),
    ]


def node_kind(name: str, u_names: Sequence[str]) -> str:
    """'clinical' for a clinical variable, 'latent' for ``z<j>``."""
    return "clinical" if name in u_names else "latent"


def result_rows(
    model: CMCL, cohort: JoinedCohort, z: np.ndarray
) -> tuple[list[EdgeRow], list[VariableRow], Iterator[LatentRow]]:
    """Edges, graph variables and latents of a fitted run as ``db.records`` rows.

    Args:
        model: the fitted estimator.
        cohort: the cohort it was fitted on.
        z: ``[n, m]`` posterior means, rows aligned with the cohort.

    Returns:
        ``(edges, variables, latents)``: lists of EdgeRow, VariableRow, and a generator of
        LatentRow (streamed into the write).
    """
    u_names = list(model.u_names_)
    edges = [
        EdgeRow(
            e.source,
            e.target,
            e.weight,
            node_kind(e.source, u_names),
            node_kind(e.target, u_names),
            orientation=e.orientation.value,
            stability=e.stability,
            direction_agreement=e.direction_agreement,
        )
        for e in model.edge_table_
    ]
    variables = [
        VariableRow(n, "clinical", t, i)
        for i, (n, t) in enumerate(zip(u_names, model.u_types_, strict=True))
    ]
    d = len(u_names)
    variables += [VariableRow(f"z{j}", "latent", "continuous", d + j) for j in range(z.shape[1])]
    latents = (
        LatentRow(ik, pk, z[i].tolist())
        for i, (ik, pk) in enumerate(zip(cohort.image_keys, cohort.patient_keys, strict=True))
    )
    return edges, variables, latents


def write_results(
    engine: sa.Engine,
    run_id: int,
    *,
    model: CMCL,
    cohort: JoinedCohort,
    z: np.ndarray,
    artifacts: Sequence[ArtifactRow],
    metrics: dict[str, Any],
    data_fingerprint: str,
) -> None:
    """Write the run's rows, artifacts, metrics and counts and mark it succeeded, atomically.

    Raises:
        ResultsDatabaseError: the database refused the write or went away (nothing written).
    """
    edges, variables, latents = result_rows(model, cohort, z)
    write_run_results(
        engine,
        run_id,
        edges=edges,
        latents=latents,
        variables=variables,
        artifacts=artifacts,
        metrics=metrics,
        n_images=len(cohort),
        n_patients=cohort.counts.patients,
        device=str(model.device_),
        data_fingerprint=data_fingerprint,
    )
