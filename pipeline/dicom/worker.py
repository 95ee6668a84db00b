"""The ingest worker processes: read, hash, validate, decode and preprocess one file at a time.

Each worker gets its settings once (:func:`init_worker`) and then chunks of :class:`Task`;
it returns small picklable :class:`Done` records (pseudonymous keys and metadata, never a
dataset, a pixel array or a raw value), so the parent's memory does not grow with the files.
The parent (:mod:`pipeline.ingest.scan`) decides duplicates and writes the database.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.dicom import deid
from pipeline.dicom.validate import (
    Accepted,
    InspectSettings,
    Quarantined,
    Reason,
    inspect_bytes,
    read_bytes,
    sha256_bytes,
)
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.mri import preprocess_series
from pipeline.imaging.preprocess import PreprocessSpec, preprocess_dataset
from pipeline.redact import PhiLogFilter, redact

logger = logging.getLogger(__name__)

PRELOAD = ["pipeline.dicom.worker"]  # forkserver imports (torch, MONAI, pydicom come with it)


@dataclass(frozen=True)
class Task:
    """One file to process, with what the catalog/quarantine already know about it (the path,
    which may embed a name, is left out of ``repr``: tasks travel as compute-engine inputs)."""

    path: str = field(repr=False)
    file_key: str
    known_sha256: str | None = None
    known_cache_key: str | None = None
    known_modality: str | None = None
    known_bad_sha256: str | None = None  # quarantined before with this content: skip it


@dataclass(frozen=True)
class Unchanged:
    """The file's content is already catalogued (with a current cached array) or quarantined."""

    file_key: str


@dataclass(frozen=True)
class Done:
    """A worker's answer for one file."""

    outcome: Accepted | Quarantined | Unchanged
    cache_key: str | None = None  # CR/DX accepted: the preprocessed array's key


@dataclass(frozen=True)
class WorkerState:
    """What every worker needs, sent once per process."""

    settings: InspectSettings
    spec: PreprocessSpec
    cache_root: Path


_STATE: WorkerState | None = None


def init_worker(state: WorkerState, subprocess: bool) -> None:
    """Per-process set-up: remember the settings; route warnings through the PHI filter."""
    global _STATE
    _STATE = state
    if subprocess:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.addFilter(PhiLogFilter())
        logging.getLogger().handlers[:] = [handler]
        torch.set_num_threads(1)  # one process per core already; avoid oversubscription


def mp_context() -> multiprocessing.context.BaseContext:
    """``fork`` while this process has a single thread (workers inherit the imported torch and
    MONAI for free); otherwise ``forkserver`` (forking a multi-threaded process, e.g. inside a
    Prefect flow, can copy a held lock), preloading the modules the workers need."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _cache() -> PreprocessCache:
    assert _STATE is not None
    return PreprocessCache(_STATE.cache_root)


def _process(task: Task) -> Done:
    assert _STATE is not None
    data = read_bytes(Path(task.path), task.file_key)
    if isinstance(data, Quarantined):
        return Done(data)
    cache = _cache()
    digest = sha256_bytes(data)
    if task.known_bad_sha256 == digest:
        return Done(Unchanged(task.file_key))
    if task.known_sha256 == digest:
        if task.known_modality == "MR":  # the series pass checks the series' cached array
            return Done(Unchanged(task.file_key))
        ckey = cache.key(digest, _STATE.spec)
        if task.known_cache_key == ckey and ckey in cache:
            return Done(Unchanged(task.file_key))
    outcome = inspect_bytes(data, task.file_key, _STATE.settings, digest)
    del data
    if not isinstance(outcome, Accepted) or outcome.modality == "MR":
        return Done(outcome.light() if isinstance(outcome, Accepted) else outcome)
    ckey = cache.key(outcome.content_sha256, _STATE.spec)
    try:
        if ckey not in cache:
            arr = preprocess_dataset(outcome.dataset, _STATE.spec, outcome.pixels)  # [1, S, S]
            cache.put(ckey, arr)
    except Exception as exc:  # noqa: BLE001 - a file that cannot be preprocessed is quarantined
        reason, detail = _failure(exc)
        return Done(Quarantined(task.file_key, outcome.content_sha256, reason, detail))
    return Done(outcome.light(), ckey)


def _failure(exc: Exception) -> tuple[Reason, str]:
    """Reason and PHI-free detail for a preprocessing failure.

    ``UnsupportedImageError`` (pipeline.imaging.preprocess) carries a reason code and a message that
    names no patient by contract; it is still passed through the redactor. Anything else is
    a ``decode_error`` described by its type only.
    """
    code = getattr(exc, "reason", None)
    if code in Reason.__members__.values():
        problem = str(getattr(exc, "problem", "") or "")
        return Reason(code), "preprocessing refused the image: " + redact(problem)
    return Reason.DECODE_ERROR, "preprocessing failed: " + deid.safe_detail(exc)


def process_chunk(tasks: Sequence[Task]) -> list[Done]:
    return [_process(t) for t in tasks]


def run_chunk(state: WorkerState, tasks: Sequence[Task]) -> list[Done]:
    """:func:`process_chunk` with ``state`` (the body of a compute-engine task, whose process
    or thread may not have been initialised; see :mod:`flows.ingest_engine`)."""
    if _STATE != state:
        init_worker(state, subprocess=False)
    return process_chunk(tasks)


def run_series(state: WorkerState, job: tuple[list[str], str]) -> tuple[Reason, str] | None:
    """:func:`series_job` with ``state`` (see :func:`run_chunk`)."""
    if _STATE != state:
        init_worker(state, subprocess=False)
    return series_job(job)


def _preprocess_series(paths: Sequence[str], cache_key: str) -> tuple[Reason, str] | None:
    """Build, reduce and cache one MR series; returns (reason, PHI-free detail) or None."""
    assert _STATE is not None
    cache = _cache()
    try:
        if cache_key not in cache:
            arr = preprocess_series([Path(p) for p in paths], _STATE.spec)  # [1, S, S]
            cache.put(cache_key, arr)
    except Exception as exc:  # noqa: BLE001 - a bad series is quarantined, the batch goes on
        reason, detail = _failure(exc)
        return reason, "MR series: " + detail
    return None


def series_job(job: tuple[list[str], str]) -> tuple[Reason, str] | None:
    return _preprocess_series(*job)
