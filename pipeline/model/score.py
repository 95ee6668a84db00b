"""Scoring: latents for newly ingested images with a trained run's ONNX encoder (``cmcl score``).

Scoring never retrains: it ingests ``dicom.source`` (new files are catalogued and preprocessed;
known ones are skipped), joins clinical records (the encoder takes ``(image, u)``), keeps the
images the run has no latent for yet, loads the run's ``encoder.onnx`` only if its sha256
matches the one recorded in ``cmcl_artifacts``, and writes the posterior means to
``cmcl_latents`` with ``scored = true``. The ONNX Runtime provider used (CUDA when present,
else CPU) is logged.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from cmcl_core.estimator import CMCL
from db.read import get_artifacts, get_run, read_latents, read_variables
from db.records import LatentRow
from db.write import write_latents
from pipeline.clinical.join import join_cohort
from pipeline.clinical.source import load_clinical
from pipeline.config import Config, cache_dir_for, run_folder
from pipeline.errors import DataError
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.images import load_training_images
from pipeline.ingest.scan import ingest
from pipeline.model.artifacts import sha256_file
from pipeline.model.onnx_export import ENCODER_FILE, encode, load_session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreResult:
    """Counts of one scoring pass (no patient data)."""

    run_id: int
    joined: int  # images joined to clinical records
    already: int  # of those, images the run already had latents for
    scored: int  # latents written now
    provider: str


def score_run(cfg: Config, run_id: int, *, key: bytes, engine: sa.Engine) -> ScoreResult:
    """Score the images a succeeded run has no latents for, with its ONNX encoder.

    Args:
        cfg: the pipeline config (same ``dicom``/``clinical``/``results`` as the run).
        run_id: a succeeded run.
        key: the pseudonym key (the one the run was ingested with).
        engine: an open results engine.

    Returns:
        Counts of what was scored.

    Raises:
        DataError: the run does not exist or did not succeed, its clinical variables differ
            from the current query's, or its encoder file is missing or altered.
    """
    run = get_run(engine, run_id)
    if run is None or run["status"] != "succeeded":
        state = "does not exist" if run is None else f"has status {run['status']}"
        raise DataError(
            f"run {run_id} {state}", "pick a succeeded run: `cmcl edges` shows the latest"
        )
    u_run = [v["name"] for v in read_variables(engine, run_id) if v["kind"] == "clinical"]
    art = {a["name"]: a for a in get_artifacts(engine, run_id)}
    if ENCODER_FILE not in art:
        raise DataError(f"run {run_id} has no {ENCODER_FILE} artifact", "re-run `cmcl run`")
    cohort = join_cohort(
        ingest(cfg, key=key, engine=engine).images, load_clinical(cfg.clinical, key=key)
    )
    if list(cohort.u_names) != u_run:
        raise DataError(
            f"the clinical query gives variables {list(cohort.u_names)} but run {run_id} was "
            f"trained on {u_run}",
            "score with the config the run was trained with",
        )
    have = {r["image_key"] for r in read_latents(engine, run_id)}
    todo = [i for i, k in enumerate(cohort.image_keys) if k not in have]
    session = load_session(
        run_folder(cfg, run_id) / art[ENCODER_FILE]["relpath"], art[ENCODER_FILE]["sha256"]
    )
    provider = session.get_providers()[0]
    if todo:
        cache = PreprocessCache(cache_dir_for(cfg))
        with tempfile.TemporaryDirectory(dir=cache.root) as tmp:
            keys = [cohort.cache_keys[i] for i in todo]
            images = load_training_images(cache, keys, Path(tmp) / "score.npy")  # [k, 1, S, S]
            images = _registered(images, cohort.u[todo], run, art, run_folder(cfg, run_id))
            z = encode(session, images, cohort.u[todo])  # [k, m]
            del images
        rows = (
            LatentRow(cohort.image_keys[i], cohort.patient_keys[i], z[r].tolist())
            for r, i in enumerate(todo)
        )
        write_latents(engine, run_id, rows, scored=True)
    logger.info("run %d: scored %d new images with %s", run_id, len(todo), provider)
    return ScoreResult(run_id, len(cohort), len(cohort) - len(todo), len(todo), provider)


def _registered(
    images: np.ndarray, u: np.ndarray, run: dict, art: dict, folder: Path
) -> np.ndarray:
    """The images as the run's encoder expects them when it was trained with
    ``model.intensity`` or ``model.align`` (intensity-standardised, then registered to its
    template; the ONNX encoder does neither): the maps are read from the run's model file,
    whose sha256 is checked first."""
    model_cfg = (run["config"] or {}).get("model") or {}
    if model_cfg.get("align", "none") == "none" and model_cfg.get("intensity", "none") == "none":
        return images
    model_art = next((a for a in art.values() if a["kind"] == "torch"), None)
    path = None if model_art is None else folder / model_art["relpath"]
    if path is None or not path.is_file() or sha256_file(path) != model_art["sha256"]:
        raise DataError(
            f"run {run['id']} was trained with model.align or model.intensity but its model "
            "file is missing or altered (the registration template and intensity maps are "
            "stored there)",
            "re-run `cmcl run`",
        )
    return CMCL.load(str(path), device="cpu").prepare_images(images, u)
