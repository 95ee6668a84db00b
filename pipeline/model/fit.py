"""Training step of a pipeline run: model settings, data fingerprint, fit, latents, save.

The Prefect flow (:mod:`flows.train`) wraps each function here in one task; nothing here knows
about Prefect, so the same steps are usable from a notebook or a test.

``model:`` in the config holds :class:`cmcl_core.config.CMCLConfig` fields plus ``latent_dim``
(m, the number of image latents ``z0..z{m-1}``; default :data:`DEFAULT_LATENT_DIM`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.estimator import CMCL
from pipeline.clinical.join import JoinedCohort
from pipeline.config import Config
from pipeline.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_LATENT_DIM = 5
MODEL_FILE = "model.pt"
EpochCallback = Callable[[int, dict], None]


def model_settings(model: dict[str, Any]) -> tuple[int, CMCLConfig]:
    """Split the config's ``model:`` mapping into ``latent_dim`` and a validated CMCLConfig.

    Raises:
        ConfigError: an unknown key or an out-of-range value (the message lists valid keys).
    """
    settings = dict(model)
    latent_dim = settings.pop("latent_dim", DEFAULT_LATENT_DIM)
    if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
        raise ConfigError(
            f"model.latent_dim must be a positive integer, got {latent_dim!r}",
            "set model.latent_dim to the number of image features to learn (e.g. 5)",
        )
    try:
        return latent_dim, CMCLConfig.from_dict(settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"invalid model settings: {err}", "fix the config's `model:` section"
        ) from None


def knowledge_roles(cfg: Config, u_names: Sequence[str]) -> dict[str, str]:
    """The config's ``knowledge:`` as the estimator's ``u_roles``, checked against the clinical
    variables the query returned.

    Raises:
        ConfigError: a name in ``knowledge`` is not a clinical variable (naming it).
    """
    roles = cfg.knowledge.roles()
    unknown = sorted(set(roles) - set(u_names))
    if unknown:
        raise ConfigError(
            f"knowledge names {', '.join(unknown)}, which the clinical query does not return "
            f"(its variables: {', '.join(u_names)})",
            "fix the spelling in knowledge.causes / knowledge.effects, or add the column to "
            "clinical.query",
        )
    return roles


def check_intensity_group(mcfg: CMCLConfig, u_names: Sequence[str], u_types: Sequence[str]) -> None:
    """``model.intensity: group`` standardises per level of a categorical clinical variable.

    Raises:
        ConfigError: ``model.intensity_group`` is not a clinical variable, or not categorical.
    """
    name = mcfg.intensity_group
    if mcfg.intensity != "group" or name is None:
        return
    if name not in u_names:
        raise ConfigError(
            f"model.intensity_group names {name}, which the clinical query does not return "
            f"(its variables: {', '.join(u_names)})",
            "set model.intensity_group to the site or scanner column and add it to "
            "clinical.query, or use model.intensity: image",
        )
    kind = u_types[list(u_names).index(name)]
    if kind != "categorical":
        raise ConfigError(
            f"model.intensity_group {name} is {kind}, not categorical",
            f"declare it under clinical.variables ({name}: categorical)",
        )


def check_stability_settings(cfg: Config) -> None:
    """``stability.level: dag`` re-solves the final DAG on resamples, so the run must solve one.

    Raises:
        ConfigError: ``model.refit_dag`` is off while ``dag``-level stability is on.
    """
    _, mcfg = model_settings(cfg.model)
    if cfg.stability is not None and cfg.stability.level == "dag" and not mcfg.refit_dag:
        raise ConfigError(
            "stability.level dag re-solves the final DAG on resampled latents, but "
            "model.refit_dag is false (the run keeps the jointly trained DAG)",
            "set model.refit_dag: true, use stability.level: full, or stability: null",
        )


def data_fingerprint(cohort: JoinedCohort) -> str:
    """sha256 over what training sees: the rows' pseudonymous keys, cached-array keys and u.

    A cache key is itself a hash of the file content and the preprocessing spec, so the
    fingerprint changes when an image, the preprocessing, a clinical value or the cohort
    changes, and is the same for a re-run on unchanged inputs.
    """
    h = hashlib.sha256()
    h.update(json.dumps([list(cohort.u_names), list(cohort.u_types)]).encode())
    for ik, ck in zip(cohort.image_keys, cohort.cache_keys, strict=True):
        h.update(f"{ik}:{ck}\n".encode())
    h.update(np.ascontiguousarray(cohort.u, dtype=np.float64).tobytes())  # [n, d]
    return h.hexdigest()


def code_version() -> str:
    """The package version, plus ``git describe`` of the source tree when it is a checkout."""
    try:
        version = importlib.metadata.version("cmcl")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]  # the checkout holding pipeline/
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    described = out.stdout.strip()
    return f"{version}+git.{described}" if out.returncode == 0 and described else version


def fit_model(
    cfg: Config,
    cohort: JoinedCohort,
    images: np.ndarray,
    *,
    device: str | None = None,
    on_epoch: EpochCallback | None = None,
) -> CMCL:
    """Fit CMCL on the joined cohort (CUDA when available unless ``device`` says otherwise).

    Args:
        cfg: the pipeline config (``model`` and ``seed`` are used).
        cohort: the joined cohort (``u``, types, names).
        images: ``[n, 1, S, S]`` float32 in [0, 1], rows aligned with the cohort (a memmap
            is read batch by batch, never copied whole).
        device: torch device; None picks CUDA when available.
        on_epoch: ``on_epoch(epoch, record)`` after each epoch (progress reporting).

    Returns:
        The fitted estimator.

    Raises:
        ConfigError: invalid model settings.
        DataError: the cohort cannot be trained on (too few rows for a batch, ...).
    """
    latent_dim, mcfg = model_settings(cfg.model)
    check_intensity_group(mcfg, cohort.u_names, cohort.u_types)
    model = CMCL.from_config(mcfg, latent_dim, device=device, seed=cfg.seed)
    try:
        model.fit(
            images,
            cohort.u,
            u_types=list(cohort.u_types),
            u_names=list(cohort.u_names),
            callback=on_epoch,
            u_roles=knowledge_roles(cfg, cohort.u_names),
        )
    except ValueError as err:
        raise DataError(
            f"the joined cohort cannot be trained on: {err}",
            "add images/records, or adjust the config's `model:` section",
        ) from None
    logger.info(
        "trained on %s: %d images, %d clinical variables, m = %d, %d edges",
        model.device_,
        len(cohort),
        len(cohort.u_names),
        latent_dim,
        len(model.edges_),
    )
    return model


def default_device() -> str:
    """The device kind training will use: ``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def posterior_means(model: CMCL, images: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The fitted model's posterior means of ``z`` for the run's own images: ``[n, m]``."""
    return model.transform(images, u)


def save_model(model: CMCL, run_dir: Path) -> Path:
    """Save the fitted estimator as ``model.pt`` in the run folder; returns its path."""
    path = Path(run_dir) / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path
