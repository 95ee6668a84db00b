"""The life of one row in ``cmcl_runs``, as a context manager around a flow run's work.

:func:`recorded_run` opens the results database, marks runs whose heartbeat stopped as
``crashed``, records a new run (status ``running``, config without secrets, code version,
device kind), keeps its heartbeat alive while the block runs, and gives the block a scratch
folder. If the block raises, the run is marked ``failed`` with a message that names no patient
(a user error's own message, else only the exception's type) and the exception propagates.
The block itself ends a successful run: :func:`pipeline.model.results.write_results` writes the
results and ``succeeded`` in one transaction, so a run never has partial results.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from db.engine import results_engine
from db.errors import UserError
from db.write import finish_run, keep_alive, mark_stale_runs, start_run
from pipeline.config import Config, cache_dir_for, expand_env, run_folder
from pipeline.model.fit import code_version

logger = logging.getLogger(__name__)

STALE_ENV = "CMCL_STALE_AFTER_S"
DEFAULT_STALE_S = 300.0  # a 'running' run silent this long is marked crashed at the next start
HEARTBEAT_S = 15.0


@dataclass
class RunRecord:
    """A run in progress.

    Attributes:
        engine: the open results engine.
        id: the run's id in ``cmcl_runs``.
        dir: the run's folder (report, model, ONNX files): ``results.report_dir/run-<id>``.
        work: a scratch folder beside the array cache, removed when the run ends.
        fingerprint: the input data's fingerprint once known (recorded with a failure too).
    """

    engine: sa.Engine
    id: int
    dir: Path
    work: Path
    fingerprint: str | None = None


def stale_after_s() -> float:
    """Seconds without a heartbeat after which a running run counts as crashed."""
    try:
        return float(os.environ.get(STALE_ENV, DEFAULT_STALE_S))
    except ValueError:
        return DEFAULT_STALE_S


@contextmanager
def recorded_run(
    cfg: Config, *, device: str, heartbeat_s: float = HEARTBEAT_S
) -> Iterator[RunRecord]:
    """Record a run around the block (see the module docstring).

    Args:
        cfg: the validated config (stored without secrets).
        device: the device kind the run trains on (``cuda`` or ``cpu``).
        heartbeat_s: seconds between heartbeats.

    Raises:
        DatabaseUnavailable: the results database cannot be opened or written.
    """
    with results_engine(expand_env(cfg.results.url)) as engine:
        mark_stale_runs(engine, stale_after_s())
        run_id = start_run(
            engine, config=cfg.redacted(), code_version=code_version(), device=device
        )
        logger.info("run %d started", run_id)
        cache_root = cache_dir_for(cfg)
        cache_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".run-{run_id}-", dir=cache_root))
        run = RunRecord(engine, run_id, run_folder(cfg, run_id), work)
        try:
            with keep_alive(engine, run_id, every_s=heartbeat_s):
                yield run
        except BaseException as err:
            _record_failure(run, err)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)


def failure_message(err: BaseException) -> str:
    """A PHI-free message for a failed run: a user error's own text, else the type only."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    return f"{type(err).__name__} (see the flow run's log)"


def _record_failure(run: RunRecord, err: BaseException) -> None:
    try:
        finish_run(
            run.engine,
            run.id,
            status="failed",
            error=failure_message(err),
            data_fingerprint=run.fingerprint,
        )
    except Exception:  # noqa: BLE001 - the original error matters more
        logger.warning("could not record the failure of run %d", run.id)
