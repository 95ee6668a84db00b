"""Incremental, parallel, streaming DICOM ingestion into the results database's catalog.

``ingest(cfg, key=...)`` walks ``dicom.source`` (:mod:`pipeline.dicom.discover`), sends files in
small chunks to worker processes (:mod:`pipeline.dicom.worker`), and writes the catalog
(``cmcl_images``) and the quarantine (``cmcl_quarantine``) in chunks as results come back, so a
crash loses at most one chunk (:mod:`pipeline.ingest.catalog`). Each worker reads a file once:
it hashes it, skips it when the catalog already holds that content with a valid cached array
(``unchanged``), and otherwise validates and decodes it (:mod:`pipeline.dicom.validate`) and
preprocesses the decoded pixels once into the preprocessed-array cache
(:mod:`pipeline.imaging.preprocess`), so training never decodes DICOM again. The parent decides
duplicates and builds MR series (:mod:`pipeline.ingest.tally`).

Every file found ends in exactly one of the two tables, and rows of files no longer in the
source are forgotten at the end of a complete scan
(:func:`pipeline.ingest.catalog.forget_vanished`), so the training units returned are exactly
the accepted files present now. They are read back from the catalog when first used
(:class:`pipeline.ingest.units.TrainingUnits`), so the scan's memory does not grow with the
number of files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from db.engine import open_results
from pipeline import pseudonyms
from pipeline.config import Config, cache_dir_for, expand_env, is_remote
from pipeline.dicom import worker
from pipeline.dicom.discover import Discovery, discover
from pipeline.dicom.validate import InspectSettings
from pipeline.errors import ConfigError
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.preprocess import PreprocessSpec
from pipeline.ingest.catalog import (
    CatalogWriter,
    Known,
    check_listing,
    forget_vanished,
    load_known,
)
from pipeline.ingest.pull import Listed, pull
from pipeline.ingest.tally import Tally, mr_pass, ordered_map, task_for
from pipeline.ingest.tally import TrainingImage as TrainingImage  # re-exported for callers
from pipeline.ingest.units import TrainingUnits
from pipeline.pacs.connect import open_source
from pipeline.pacs.source import PacsSource

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (files done, files found)
# SQLite page cache of an engine opened for an ingest: each catalog page is written once, in
# arrival order, so a larger cache buys little and would fill up as the catalog grows.
INGEST_CACHE_MIB = 4


@dataclass(frozen=True)
class IngestResult:
    """What one scan did.

    Attributes:
        found: Files discovered under ``dicom.source``.
        catalogued: Accepted files written (new or changed) in this scan.
        unchanged: Files already catalogued or quarantined with the same content (and, for an
            image, a valid cached array).
        quarantined: Count per reason code of the files rejected in this scan.
        images: Every current training unit (new and unchanged): CR/DX instances in file
            order, then MR series in series-key order; read back from the catalog when
            ``ingest`` returns, or on first use with ``load_units=False`` (``len`` reads
            nothing).
        forgotten: Files that were in the catalog or quarantine but are no longer in the
            source; their rows were deleted.
        seconds: Wall time of the scan.
    """

    found: int
    catalogued: int
    unchanged: int
    quarantined: dict[str, int]
    images: TrainingUnits = field(repr=False)
    forgotten: int = 0
    seconds: float = 0.0

    @property
    def n_quarantined(self) -> int:
        """All quarantined files of this scan."""
        return sum(self.quarantined.values())


class Pool(Protocol):
    """Where the per-file work runs, when not in ``dicom.workers`` local processes: an
    executor-like view of the compute engine (:class:`flows.ingest_engine.EnginePool`)."""

    workers: int
    chunk: int  # most files per unit of work (a task has a fixed cost on an engine)

    def start(self, state: worker.WorkerState) -> Executor:
        """An executor running :func:`worker.process_chunk` / :func:`worker.series_job` with
        ``state``; its ``shutdown`` releases what ``start`` took."""


def ingest(
    cfg: Config,
    *,
    key: bytes,
    engine: sa.Engine | None = None,
    progress: Progress | None = None,
    pool: Pool | None = None,
    load_units: bool = True,
) -> IngestResult:
    """Scan ``cfg.dicom.source`` (a folder or a PACS) and bring the catalog and quarantine up
    to date; a PACS is pulled by :func:`pipeline.ingest.pull.pull`.

    Args:
        cfg: The pipeline config (``dicom.*`` and ``results.url`` are used).
        key: The pseudonymisation key (:func:`pipeline.pseudonyms.pseudonym_key_from_env`).
        engine: An open results engine; when None, ``results.url`` is opened (with a small
            page cache, :data:`INGEST_CACHE_MIB`) and migrated.
        progress: Called as ``progress(files_done, files_found)`` after each chunk.
        pool: Runs the per-file work (read, validate, decode, preprocess) on the compute
            engine; None: ``dicom.workers`` local processes. The catalog and quarantine are
            written here either way, in batches.
        load_units: Read the training units from the catalog before returning (a snapshot of
            this scan); False: ``images`` is read on first use and only its ``len`` is free
            (for callers that need counts only, such as ``cmcl ingest``).

    Returns:
        Counts of this scan and every current training unit.

    Raises:
        ConfigError: ``dicom.source`` is not a folder or a PACS address.
        UserError: the PACS refuses the credentials, has no such service, or cannot be reached
            (before any work; :mod:`pipeline.pacs`).
        DataError: ``dicom.source`` is empty while the database lists files from it.
        DatabaseUnavailable: the results database cannot be opened or written.
    """
    pacs = None
    if is_remote(cfg.dicom.source):
        pacs = open_source(cfg.dicom)
        try:
            pacs.check()  # 401/403/404/unreachable: a clear error before any work
        except BaseException:
            pacs.close()
            raise
    elif not Path(cfg.dicom.source).is_dir():
        raise ConfigError(
            f"dicom.source {cfg.dicom.source} is not an existing folder",
            "set dicom.source in the config to the folder holding the DICOM files, or to a "
            "PACS (http(s)://.../dicom-web or dimse://AET@host:port)",
        )
    own = engine is None
    try:
        if engine is None:
            engine = open_results(expand_env(cfg.results.url), cache_mib=INGEST_CACHE_MIB)
        result = _scan(cfg, key, engine, progress, pacs, pool)
        if load_units:
            result.images.load()
        return result
    finally:
        if own and engine is not None:
            engine.dispose()
        if pacs is not None:
            pacs.close()


def _scan(
    cfg: Config,
    key: bytes,
    engine: sa.Engine,
    progress: Progress | None,
    pacs: PacsSource | None,
    pool: Pool | None,
) -> IngestResult:
    t0 = time.perf_counter()
    spec = PreprocessSpec.from_config(cfg.dicom)
    cache_root = cache_dir_for(cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    known = load_known(engine)
    if pacs is None:
        found = discover(Path(cfg.dicom.source))
        files = [path for path, _ in found.files]  # the MR series pass needs the paths
        fkeys = [pseudonyms.file_key(key, rel) for _, rel in found.files]
    else:  # a remote instance is named by its image key (pipeline.ingest.pull)
        listed = [Listed(i, pseudonyms.image_key(key, i.sop_uid)) for i in pacs.search()]
        fkeys = [x.file_key for x in listed]
        found = Discovery(files=[("", fk) for fk in fkeys])  # a listing; no local paths
    check_listing(found, known, str(cfg.dicom.source))
    found_keys = set(fkeys)
    total = len(fkeys)
    settings = InspectSettings(key, tuple(cfg.dicom.modalities), cfg.dicom.reject_burned_in)
    state = worker.WorkerState(settings, spec, cache_root)
    if pool is None:
        workers = max(1, min(cfg.dicom.workers, total))
        executor = _start_workers(state, workers)
    else:
        workers, executor = max(1, pool.workers), pool.start(state)
    owner = {e.image_key: fk for fk, e in known.catalog.items() if fk in found_keys}
    tally = Tally(known.catalog, owner, CatalogWriter(engine), found_keys)
    chunk = max(1, min(32 if pool is None else pool.chunk, total // (workers * 4)))

    def run_chunks(tasks: Iterator[worker.Task]) -> Iterator[list[worker.Done]]:
        return ordered_map(worker.process_chunk, _chunks(tasks, chunk), executor, 2 * workers)

    try:
        if pacs is None:
            done = 0
            for batch in run_chunks(_tasks(files, fkeys, known)):
                tally.add_chunk(batch, files[done : done + len(batch)])
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            tally.writer.flush()
            mr_pass(tally, PreprocessCache(cache_root), spec, executor)
        else:
            pull(pacs, listed, known, tally, lambda ts: chain.from_iterable(run_chunks(iter(ts))),
                 executor, spec, PreprocessCache(cache_root), settings, progress)  # fmt: skip
        tally.writer.flush()
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        try:
            tally.writer.flush()  # keep what was processed if the scan dies half-way
        except Exception:  # noqa: BLE001 - never mask the original error
            logger.warning("could not write the last chunk of the catalog", exc_info=False)
    forgotten = forget_vanished(engine, known, found, found_keys)
    units = TrainingUnits(engine, fkeys, tally.planar, tally.mr_units, by_key=pacs is not None)
    result = IngestResult(total, tally.catalogued, tally.unchanged,
                          dict(sorted(tally.reasons.items())), units, forgotten,
                          time.perf_counter() - t0)  # fmt: skip
    logger.info(
        "ingest: %d files found, %d catalogued, %d unchanged, %d quarantined, %d forgotten "
        "in %.1f s",
        result.found, result.catalogued, result.unchanged, result.n_quarantined,
        result.forgotten, result.seconds,
    )  # fmt: skip
    return result


def _tasks(files: list[str], fkeys: list[str], known: Known) -> Iterator[worker.Task]:
    """One worker task per file, with what the catalog and quarantine know about it."""
    for path, fk in zip(files, fkeys, strict=True):
        yield task_for(path, fk, known)


def _start_workers(state: worker.WorkerState, workers: int) -> ProcessPoolExecutor | None:
    """A pool of ``workers`` processes, or None to work in this process (one worker)."""
    if workers == 1:
        worker.init_worker(state, subprocess=False)
        return None
    return ProcessPoolExecutor(
        workers, worker.mp_context(), initializer=worker.init_worker, initargs=(state, True)
    )


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    """Lists of at most ``size`` items (streams the iterator)."""
    while batch := list(islice(it, size)):
        yield batch
