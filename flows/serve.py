"""``cmcl serve``: register and serve the deployment ``cmcl/train`` of the flow ``cmcl``.

Against a running Prefect server (``prefect server start``; ``PREFECT_API_URL`` pointing at
it), this process registers the deployment, optionally on a cron schedule, and polls for its
runs: ``prefect deployment run cmcl/train`` (optionally ``--param config=/other.yaml``) then
executes the pipeline here, in a subprocess per flow run. Work-pool deployments (Docker or
Kubernetes workers on GPU nodes) use ``prefect.yaml`` instead; the flow is the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from flows.train import cmcl_flow
from pipeline.config import load_config
from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

DEPLOYMENT = "train"


def serve_deployment(config: Path, cron: str | None = None, *, limit: int = 1) -> None:
    """Serve ``cmcl/train`` until interrupted.

    Args:
        config: the YAML config; its absolute path becomes the deployment's default
            ``config`` parameter (a triggered run may override it with ``--param``).
        cron: a cron schedule (e.g. ``"0 2 * * *"``); None serves on demand only.
        limit: flow runs executed at once by this process (one training at a time by default).

    Raises:
        ConfigError: the config is invalid, ``PREFECT_API_URL`` is unset, or the cron
            expression is malformed.
    """
    path = Path(config).resolve()
    load_config(path)  # fail now, not at the first scheduled run
    if not os.environ.get("PREFECT_API_URL") and not _profile_api_url():
        raise ConfigError(
            "PREFECT_API_URL is not set: serving needs a running Prefect server (the temporary "
            "local API cannot schedule runs)",
            "start one with `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`",
        )
    if cron is not None:
        _check_cron(cron)
    logger.info("serving deployment cmcl/%s with config %s (cron: %s)", DEPLOYMENT, path, cron)
    cmcl_flow.serve(
        name=DEPLOYMENT,
        cron=cron,
        parameters={"config": str(path)},
        description="CMCL: ingest, join, train, export ONNX, report, write back.",
        tags=["cmcl"],
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _profile_api_url() -> str | None:
    return PREFECT_API_URL.value()


def _check_cron(cron: str) -> None:
    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(
            f"--cron {cron!r} is not a valid cron expression",
            'use five fields, e.g. --cron "0 2 * * *" for every night at 02:00',
        ) from None
