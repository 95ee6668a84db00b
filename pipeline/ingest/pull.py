"""Ingest from a PACS: download only what the catalog lacks, then treat it exactly like a file.

The search (:meth:`pipeline.pacs.source.PacsSource.search`) lists the instances of the studies
matching ``dicom.query``. A remote instance is named by its keyed pseudonym: its ``file_key`` is
its ``image_key`` (HMAC of the SOPInstanceUID), so "already catalogued" is a set lookup made
before any download. An instance is **current**, and is not downloaded, when

* it is catalogued as CR/DX and its preprocessed array is in the cache, or
* it is quarantined for a reason its content decides (a DICOM instance does not change under
  its SOPInstanceUID), or for a reason the config decides that still holds (its Modality, as
  the search reports it, is still not in ``dicom.modalities``; BurnedInAnnotation while
  ``dicom.reject_burned_in`` is still on), or
* it belongs to an MR series whose every instance is catalogued and whose series array is
  cached under the key those instances make.

Everything else is retrieved in batches of whole series (an MR series is rebuilt from all its
slices, so a series with anything new is downloaded whole), ``RETRIEVE_THREADS`` at a time, the
next batch into memory while the workers process the current one. A batch is written to a
private spool folder (mode 0700, files named by their position in the batch, never by a UID),
handed to the same ingest workers as files (:mod:`pipeline.dicom.worker`: hash, validate,
de-identify, preprocess) and removed before the next batch, whatever happens. An instance the
PACS lists but does not deliver is quarantined as ``retrieve_error`` (not a settled verdict:
the next run tries it again); the batch goes on. A re-run with nothing new downloads nothing; an
interrupted pull resumes from what the catalog holds (finished batches are written).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from pipeline.dicom import worker
from pipeline.dicom.validate import InspectSettings, Quarantined, Reason
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.preprocess import PreprocessSpec
from pipeline.ingest.catalog import Known
from pipeline.ingest.tally import Tally, mr_pass, series_cache_key, task_for
from pipeline.pacs.source import RETRIEVE_THREADS, PacsSource, RemoteInstance, RetrieveError

logger = logging.getLogger(__name__)

BATCH = 64  # instances per spool batch (a larger series is one batch)

RunChunks = Callable[[list[worker.Task]], Iterator[worker.Done]]  # the worker pool, in order


@dataclass(frozen=True)
class Listed:
    """One searched instance and its pseudonym (the file key of a remote instance)."""

    inst: RemoteInstance
    file_key: str


@dataclass(frozen=True)
class PullStats:
    """What a pull downloaded (for the log and the benchmarks)."""

    downloaded: int
    retrieve_errors: int
    bytes: int


def plan_downloads(
    listed: list[Listed],
    known: Known,
    cache: PreprocessCache,
    spec: PreprocessSpec,
    settings: InspectSettings,
) -> tuple[list[Listed], list[list[Listed]]]:
    """Split the search result into current instances and series to download.

    Returns:
        ``(current, series)``: the instances not to download, and the groups (one per series,
        in search order) of instances to download.
    """
    current: list[Listed] = []
    todo: list[list[Listed]] = []

    def settled(m: Listed) -> bool:
        reason = known.reasons.get(m.file_key)
        if reason is None or m.file_key in known.catalog:
            return False
        if reason == Reason.UNSUPPORTED_MODALITY:
            return bool(m.inst.modality) and m.inst.modality.upper() not in settings.modalities
        if reason == Reason.BURNED_IN_ANNOTATION:
            return settings.reject_burned_in
        return m.file_key in known.settled_bad

    for _, group in groupby(listed, key=lambda x: (x.inst.study_uid, x.inst.series_uid)):
        members = list(group)
        entries = [known.catalog.get(m.file_key) for m in members]
        mr = [e for e in entries if e is not None and e.modality == "MR"]
        if mr and len(mr) == len(members):
            skey = series_cache_key([e.content_sha256 for e in mr], cache, spec)
            if skey in cache and all(e.cache_key == skey for e in mr):
                current.extend(members)
                continue
        fetch: list[Listed] = []
        for m, e in zip(members, entries, strict=True):
            cached = e is not None and e.modality != "MR" and e.cache_key in cache
            if cached or settled(m):
                current.append(m)
            else:  # new, uncached, quarantined for a reason to recheck, or an MR slice
                fetch.append(m)
        if fetch:
            todo.append(fetch)
    return current, todo


def batches(series: list[list[Listed]], size: int | None = None) -> Iterator[list[Listed]]:
    """Whole series packed into batches of about ``size`` (default :data:`BATCH`) instances."""
    size = size or BATCH
    batch: list[Listed] = []
    for s in series:
        if batch and len(batch) + len(s) > size:
            yield batch
            batch = []
        batch.extend(s)
    if batch:
        yield batch


def pull(
    pacs: PacsSource,
    listed: list[Listed],
    known: Known,
    tally: Tally,
    run_chunks: RunChunks,
    mr_executor,
    spec: PreprocessSpec,
    cache: PreprocessCache,
    settings: InspectSettings,
    progress: Callable[[int, int], None] | None = None,
) -> PullStats:
    """Bring the catalog up to date with ``listed`` (see the module docstring).

    Args:
        pacs: the source to retrieve from.
        listed: the search result with file keys, grouped by series (sorted by UIDs).
        known: the database's view before this scan.
        tally: the scan's running state; its writer gets the rows.
        run_chunks: runs worker tasks in order (the scan's worker pool).
        mr_executor: the process pool for MR series (None: in this process).
        spec: the preprocessing spec.
        cache: the preprocessed-array cache.
        settings: the validation settings (modalities, burned-in policy).
        progress: called as ``progress(instances_done, instances_listed)``.
    """
    current, todo = plan_downloads(listed, known, cache, spec, settings)
    for m in current:
        tally.add(worker.Done(worker.Unchanged(m.file_key)), "")
    mr_pass(tally, cache, spec, mr_executor)  # current MR series: cached, nothing is rebuilt
    tally.series.clear()
    done, downloaded, errors, nbytes = len(current), 0, 0, 0
    if progress is not None:
        progress(done, len(listed))
    with ThreadPoolExecutor(RETRIEVE_THREADS, thread_name_prefix="retrieve") as threads:
        for batch, fetches in _prefetched(threads, pacs, batches(todo)):
            spool = Path(tempfile.mkdtemp(prefix="cmcl-spool-"))  # mode 0700
            try:
                paths: list[str] = []
                for i, got in enumerate(f.result() for f in fetches):
                    if isinstance(got, Quarantined):
                        tally.reject(got)
                        errors += 1
                        paths.append("")
                        continue
                    paths.append(_spool_write(spool / f"{i}.dcm", got))
                    downloaded += 1
                    nbytes += len(got)
                tasks = [task_for(p, m.file_key, known) for p, m in zip(paths, batch, strict=True)
                         if p]  # fmt: skip
                tally.add_chunk(list(run_chunks(tasks)), [t.path for t in tasks])
                mr_pass(tally, cache, spec, mr_executor)  # this batch's series, while spooled
                tally.series.clear()
                tally.writer.flush()
            finally:
                shutil.rmtree(spool, ignore_errors=True)
            done += len(batch)
            if progress is not None:
                progress(done, len(listed))
    logger.info(
        "pull: %d instances listed, %d current, %d downloaded (%.1f MB), %d not delivered",
        len(listed), len(current), downloaded, nbytes / 1e6, errors,
    )  # fmt: skip
    return PullStats(downloaded, errors, nbytes)


def _prefetched(
    threads: ThreadPoolExecutor, pacs: PacsSource, todo: Iterator[list[Listed]]
) -> Iterator[tuple[list[Listed], list[Future]]]:
    """Each batch with the futures of its retrieves; the next batch's retrieves are already
    running (into memory) while the workers process this one."""
    nxt = next(todo, None)
    pending = None if nxt is None else (nxt, [threads.submit(_fetch, pacs, m) for m in nxt])
    while pending is not None:
        current = pending
        nxt = next(todo, None)
        pending = None if nxt is None else (nxt, [threads.submit(_fetch, pacs, m) for m in nxt])
        yield current


def _fetch(pacs: PacsSource, m: Listed) -> bytes | Quarantined:
    try:
        return pacs.retrieve(m.inst)
    except RetrieveError as err:
        return Quarantined(m.file_key, None, Reason.RETRIEVE_ERROR, err.detail)


def _spool_write(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)
