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
the accepted files present now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import sqlalchemy as sa

from db.engine import open_results
from pipeline import pseudonyms
from pipeline.config import Config, cache_dir_for, expand_env
from pipeline.dicom import worker
from pipeline.dicom.discover import discover
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
from pipeline.ingest.tally import Tally, TrainingImage, mr_pass, ordered_map

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (files done, files found)


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
            order, then MR series in series-key order.
        forgotten: Files that were in the catalog or quarantine but are no longer in the
            source; their rows were deleted.
        seconds: Wall time of the scan.
    """

    found: int
    catalogued: int
    unchanged: int
    quarantined: dict[str, int]
    images: tuple[TrainingImage, ...] = field(repr=False)
    forgotten: int = 0
    seconds: float = 0.0

    @property
    def n_quarantined(self) -> int:
        """All quarantined files of this scan."""
        return sum(self.quarantined.values())


def ingest(
    cfg: Config, *, key: bytes, engine: sa.Engine | None = None, progress: Progress | None = None
) -> IngestResult:
    """Scan ``cfg.dicom.source`` and bring the catalog and quarantine up to date.

    Args:
        cfg: The pipeline config (``dicom.*`` and ``results.url`` are used).
        key: The pseudonymisation key (:func:`pipeline.pseudonyms.pseudonym_key_from_env`).
        engine: An open results engine; when None, ``results.url`` is opened and migrated.
        progress: Called as ``progress(files_done, files_found)`` after each chunk.

    Returns:
        Counts of this scan and every current training unit.

    Raises:
        ConfigError: ``dicom.source`` is not a folder.
        DataError: ``dicom.source`` is empty while the database lists files from it.
        DatabaseUnavailable: the results database cannot be opened or written.
    """
    source = Path(cfg.dicom.source)
    if not source.is_dir():
        raise ConfigError(
            f"dicom.source {source} is not an existing folder",
            "set dicom.source in the config to the folder holding the DICOM files",
        )
    own = engine is None
    engine = open_results(expand_env(cfg.results.url)) if engine is None else engine
    try:
        return _scan(cfg, source, key, engine, progress)
    finally:
        if own:
            engine.dispose()


def _scan(cfg: Config, source: Path, key: bytes, engine: sa.Engine, progress: Progress | None):
    t0 = time.perf_counter()
    spec = PreprocessSpec.from_config(cfg.dicom)
    cache_root = cache_dir_for(cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    known = load_known(engine)
    found = discover(source)
    check_listing(found, known, str(source))
    files = [str(path) for path, _ in found.files]  # the MR series pass needs the paths
    fkeys = [pseudonyms.file_key(key, rel) for _, rel in found.files]
    found_keys = set(fkeys)
    total = len(files)
    settings = InspectSettings(key, tuple(cfg.dicom.modalities), cfg.dicom.reject_burned_in)
    workers = max(1, min(cfg.dicom.workers, total))
    executor = _start_workers(worker.WorkerState(settings, spec, cache_root), workers)
    owner = {e.image_key: fk for fk, e in known.catalog.items() if fk in found_keys}
    tally = Tally(known.catalog, owner, CatalogWriter(engine))
    done = 0
    try:
        chunk = max(1, min(32, total // (workers * 4)))
        batches = _chunks(_tasks(files, fkeys, known), chunk)
        for batch in ordered_map(worker.process_chunk, batches, executor, 2 * workers):
            for d in batch:
                tally.add(d, files[done])
                done += 1
            if progress is not None:
                progress(done, total)
        tally.writer.flush()
        mr_pass(tally, PreprocessCache(cache_root), spec, executor)
        tally.writer.flush()
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        try:
            tally.writer.flush()  # keep what was processed if the scan dies half-way
        except Exception:  # noqa: BLE001 - never mask the original error
            logger.warning("could not write the last chunk of the catalog", exc_info=False)
    forgotten = forget_vanished(engine, known, found, found_keys)
    result = IngestResult(total, tally.catalogued, tally.unchanged,
                          dict(sorted(tally.reasons.items())), tuple(tally.images), forgotten,
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
        e = known.catalog.get(fk)
        seen = () if e is None else (e.content_sha256, e.cache_key, e.modality)
        yield worker.Task(path, fk, *seen, known_bad_sha256=known.settled_bad.get(fk))


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
