"""Ingest's per-file work as Prefect tasks on the compute engine (``compute: {engine: dask}``).

:func:`pipeline.ingest.scan.ingest` reads, validates, de-identifies, decodes and preprocesses
files in chunks, through an executor; :class:`EnginePool` gives it one whose ``submit`` runs a
chunk as the task :func:`decode_task` (an MR series as :func:`series_task`) on the task runner of
``compute:`` (:func:`flows.compute.task_runner`). The catalog and quarantine are still written by
the scan, in the flow's process, in batches; a task returns small records (pseudonymous keys,
content hashes, technical metadata, PHI-free reasons).

Privacy: Prefect logs and (with persistence) stores task inputs and results, and Dask pickles
them over the network. A task's inputs are file paths or spool paths (a :class:`Task` keeps its
path out of ``repr``), keys and settings, never a patient identifier, and results are never
persisted. The pseudonym key does not travel either: each worker reads ``CMCL_PSEUDONYM_KEY``
from its own environment (a ``LocalCluster`` inherits it; set it on the workers of a remote
cluster) and checks it against a keyed fingerprint of the flow's key, so a worker with another
key fails instead of writing other pseudonyms.

Shared paths: a worker reads the files (or a PACS pull's spool folder) and writes the
preprocessed-array cache (``dicom.cache_dir``) itself, so on a multi-machine cluster both must
be on a file system every worker mounts at the same path.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.task_runners import TaskRunner

from flows.compute import single_torch_thread, task_runner
from flows.console import protect_handlers
from pipeline.config import ComputeConfig
from pipeline.dicom import worker
from pipeline.dicom.validate import Reason
from pipeline.errors import ConfigError
from pipeline.pseudonyms import pseudonym_key_from_env

# privacy: never pickle task results into $PREFECT_HOME/storage
_PRIVATE = dict(persist_result=False, cache_policy=NONE)


def key_fingerprint(key: bytes) -> str:
    """A keyed fingerprint that tells whether two processes hold the same pseudonym key."""
    return hmac.new(key, b"cmcl ingest worker key check", hashlib.sha256).hexdigest()


def _keyed(state: worker.WorkerState, fingerprint: str) -> worker.WorkerState:
    """``state`` with this worker's key from the environment, checked against the flow's."""
    key = pseudonym_key_from_env()
    if not hmac.compare_digest(key_fingerprint(key), fingerprint):
        raise ConfigError(
            "a compute worker holds another CMCL_PSEUDONYM_KEY than the flow",
            "start the Dask workers with the same CMCL_PSEUDONYM_KEY as the flow",
        )
    return replace(state, settings=replace(state.settings, key=key))


@task(name="ingest-decode", **_PRIVATE)
def decode_task(
    state: worker.WorkerState, fingerprint: str, tasks: Sequence[worker.Task]
) -> list[worker.Done]:
    """Read, validate, de-identify, decode and preprocess one chunk of files."""
    protect_handlers()  # this worker's log handlers redact PHI too
    with single_torch_thread():
        return worker.run_chunk(_keyed(state, fingerprint), tasks)


@task(name="ingest-series", **_PRIVATE)
def series_task(
    state: worker.WorkerState, fingerprint: str, job: tuple[list[str], str]
) -> tuple[Reason, str] | None:
    """Build, reduce and cache one MR series."""
    protect_handlers()
    with single_torch_thread():
        return worker.run_series(_keyed(state, fingerprint), job)


class _EngineExecutor:
    """``submit(fn, item)`` of the scan's two worker functions as engine tasks; ``shutdown``
    stops the runner only when this executor started it (see :meth:`EnginePool.__enter__`)."""

    def __init__(
        self, runner: TaskRunner[Any], state: worker.WorkerState, fingerprint: str, owned: bool
    ):
        self.runner = runner
        self.common = {"state": state, "fingerprint": fingerprint}
        self.owned = owned

    def submit(self, fn, item) -> Any:  # a PrefectFuture (result(), like an executor future)
        if fn is worker.process_chunk:
            return self.runner.submit(decode_task, {**self.common, "tasks": list(item)})
        if fn is worker.series_job:
            return self.runner.submit(series_task, {**self.common, "job": item})
        raise ValueError(f"no engine task for {getattr(fn, '__name__', fn)}")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self.owned:
            self.runner.__exit__(None, None, None)


def _import_worker_modules() -> None:
    """Import what an ingest task runs (torch, MONAI, pydicom, Prefect): run on each worker."""
    importlib.import_module(__name__)


class EnginePool:
    """The compute engine as ingest's pool (:class:`pipeline.ingest.scan.Pool`).

    Each ingest starts the engine and stops it at its end, unless the pool is entered first::

        with EnginePool(cfg.compute) as pool:  # cluster up, workers' imports done
            ingest(cfg, key=key, pool=pool)     # every ingest in the block reuses them

    which keeps the engine's start-up (for a Dask LocalCluster: worker processes that each
    import torch and MONAI, several CPU seconds) out of every ingest but the first.
    """

    chunk = 256  # files per task: a Prefect task costs tens of ms of API calls

    def __init__(self, compute: ComputeConfig):
        self.compute = compute
        self.workers = compute.workers
        self._runner: TaskRunner[Any] | None = None

    def __enter__(self) -> EnginePool:
        """Start the engine now and keep it until :meth:`__exit__`; every worker imports the
        ingest modules before this returns (Dask; the local engine's threads share this
        process's)."""
        runner = task_runner(self.compute)
        runner.__enter__()
        try:
            client = getattr(runner, "client", None)  # DaskTaskRunner: start the cluster
            if client is not None:
                client.run(_import_worker_modules)
        except BaseException:
            runner.__exit__(None, None, None)
            raise
        self._runner = runner
        return self

    def __exit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.__exit__(None, None, None)

    def start(self, state: worker.WorkerState) -> _EngineExecutor:
        """The engine's executor (started here unless the pool is entered); the state travels
        without the key (see the module doc)."""
        fingerprint = key_fingerprint(state.settings.key)
        keyless = replace(state, settings=replace(state.settings, key=b""))
        if self._runner is not None:
            return _EngineExecutor(self._runner, keyless, fingerprint, owned=False)
        runner = task_runner(self.compute)
        runner.__enter__()
        return _EngineExecutor(runner, keyless, fingerprint, owned=True)


def ingest_pool(compute: ComputeConfig) -> EnginePool | None:
    """The pool of ``compute:`` for ingest: the Dask engine's tasks, or None for the local
    engine, whose ingest keeps ``dicom.workers`` local processes (decoding is partly pure
    Python, which the local engine's threads would run one at a time)."""
    return EnginePool(compute) if compute.engine == "dask" else None
