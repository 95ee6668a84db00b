"""Incremental, parallel, streaming DICOM ingestion into the results database's catalog.

``ingest(cfg, key=...)`` walks ``dicom.source`` (sorted, so runs are deterministic), sends
files in small chunks to worker processes, and writes the catalog (``cmcl_images``) and the
quarantine (``cmcl_quarantine``) in chunks as results come back, so a crash loses at most one
chunk. Each worker reads a file once: it hashes it, skips it when the catalog already holds
that content with a valid cached array (``unchanged``), and otherwise validates and decodes it
(:mod:`pipeline.dicom.validate`) and preprocesses the decoded pixels once into the
preprocessed-array cache (:mod:`pipeline.imaging.preprocess`), so training never decodes DICOM
again.

Training units (``IngestResult.images``):

* CR/DX: one per accepted instance; its ``cache_key`` is the instance's preprocessed image.
* MR: one per series (SeriesInstanceUID). After the per-file pass, each series whose instances
  changed is read as a volume and reduced to 2D (``dicom.mri_reduction``) by
  ``preprocess_series``; every instance row of the series carries the series' ``cache_key``
  and ``n_slices``; the unit's ``image_key`` is the smallest instance key of the series (a
  deterministic representative that is a real catalog row).

Duplicates (the same SOPInstanceUID in two files) are decided here, in sorted file order: the
first file wins, the others are quarantined as ``duplicate_instance``. Every file found ends
in exactly one of the two tables. Files and folders whose name starts with "." are skipped.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import pseudonyms
from pipeline.config import Config, expand_env
from pipeline.dicom import worker
from pipeline.dicom.validate import (
    Accepted,
    InspectSettings,
    Quarantined,
    Reason,
    sha256_bytes,
)
from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

FLUSH_ROWS = 500  # rows buffered before a database write
Progress = Callable[[int, int], None]  # (files done, files found)


@dataclass(frozen=True)
class TrainingImage:
    """One training unit: an instance (CR/DX) or a series (MR), with its cached array key."""

    image_key: str
    patient_key: str
    series_key: str | None
    cache_key: str
    modality: str


@dataclass(frozen=True)
class IngestResult:
    """What one scan did.

    Attributes:
        found: Files discovered under ``dicom.source``.
        catalogued: Accepted files written (new or changed) in this scan.
        unchanged: Files already catalogued with the same content and a valid cached array.
        quarantined: Count per reason code of the files rejected in this scan.
        images: Every current training unit (new and unchanged): CR/DX instances in file
            order, then MR series in series-key order.
        seconds: Wall time of the scan.
    """

    found: int
    catalogued: int
    unchanged: int
    quarantined: dict[str, int]
    images: tuple[TrainingImage, ...] = field(repr=False)
    seconds: float = 0.0

    @property
    def n_quarantined(self) -> int:
        """All quarantined files of this scan."""
        return sum(self.quarantined.values())


@dataclass(frozen=True)
class _CatalogEntry:
    content_sha256: str
    image_key: str
    patient_key: str
    series_key: str | None
    modality: str
    cache_key: str | None
    row: dict | None = None  # MR only: the catalog row, rewritten when its series changes


# Reasons that depend on the config or on other files: such files are re-validated each scan.
RECHECK = frozenset({"unsupported_modality", "burned_in_annotation", "duplicate_instance"})


# --- parent side ----------------------------------------------------------------------------


def discover(source: Path) -> Iterator[tuple[Path, str]]:
    """Files under ``source``, recursively, sorted by relative path, as (path, '/'-relpath).

    Hidden files and folders (name starting with ".") are skipped; symlinked folders are
    not followed (no cycles); a folder that cannot be listed is skipped with a warning that
    does not name it (folder names may embed patient names).
    """
    yield from _walk(Path(source), "")


def _walk(folder: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        logger.warning("a folder under dicom.source could not be listed (%s)", type(exc).__name__)
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        rel = prefix + e.name
        if e.is_dir(follow_symlinks=False):
            yield from _walk(Path(e.path), rel + "/")
        elif e.is_file():
            yield Path(e.path), rel


def cache_dir_for(cfg: Config) -> Path:
    """The preprocessed-array cache: ``dicom.cache_dir``, else ``.cmcl_cache`` beside a SQLite
    results file, else ``./.cmcl_cache``."""
    if cfg.dicom.cache_dir is not None:
        return Path(cfg.dicom.cache_dir)
    url = cfg.results.url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///") :]).parent / ".cmcl_cache"
    return Path.cwd() / ".cmcl_cache"


def preprocess_spec_for(cfg: Config):
    """The preprocessing spec the ingest (and the training loader) use for this config."""
    from pipeline.imaging.preprocess import PreprocessSpec

    return PreprocessSpec.from_config(cfg.dicom)


def open_results_db(url: str):
    """Open (and migrate) the results database at ``url`` (``${ENV}`` references expanded)."""
    from db.engine import open_results

    return open_results(expand_env(url))


def _load_catalog(engine) -> dict[str, _CatalogEntry]:
    from db.read import read_catalog
    from db.records import ImageRow

    fields = ImageRow.__dataclass_fields__
    return {
        r["file_key"]: _CatalogEntry(
            r["content_sha256"],
            r["image_key"],
            r["patient_key"],
            r.get("series_key"),
            r["modality"],
            r.get("cache_key"),
            {k: r[k] for k in fields if k in r} if r["modality"] == "MR" else None,
        )  # fmt: skip
        for r in read_catalog(engine)
    }


def _load_quarantine(engine) -> dict[str, str]:
    """file_key -> content hash of quarantined files whose verdict cannot change by itself."""
    from db.read import read_quarantine

    return {
        r["file_key"]: r["content_sha256"]
        for r in read_quarantine(engine)
        if r["content_sha256"] and r["reason"] not in RECHECK
    }


class _Writer:
    """Buffers catalog and quarantine rows and writes them in chunks."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.images: list = []
        self.quarantine: list = []

    def image(self, row) -> None:
        self.images.append(row)
        if len(self.images) >= FLUSH_ROWS:
            self.flush()

    def reject(self, q: Quarantined) -> None:
        from db.records import QuarantineRow

        self.quarantine.append(
            QuarantineRow(q.file_key, q.content_sha256, q.reason.value, q.detail)
        )
        if len(self.quarantine) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        from db.write import upsert_images, upsert_quarantine

        if self.images:  # also drops these files' quarantine rows (one table per file)
            upsert_images(self.engine, self.images)
            self.images = []
        if self.quarantine:
            upsert_quarantine(self.engine, self.quarantine)
            self.quarantine = []


def _image_row(acc: Accepted, cache_key: str | None, n_slices: int = 1):
    from db.records import ImageRow

    return ImageRow(
        image_key=acc.image_key, patient_key=acc.patient_key, study_key=acc.study_key,
        series_key=acc.series_key, file_key=acc.file_key, content_sha256=acc.content_sha256,
        modality=acc.modality, photometric=acc.photometric, rows=acc.rows, columns=acc.columns,
        n_slices=n_slices, transfer_syntax=acc.transfer_syntax, cache_key=cache_key,
    )  # fmt: skip


def _ordered_map(
    fn: Callable, items: Iterator, executor: ProcessPoolExecutor | None, in_flight: int
) -> Iterator:
    """``map(fn, items)`` in order, with at most ``in_flight`` pending futures (imap-style)."""
    if executor is None:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _MrMember:
    file_key: str
    path: str
    content_sha256: str
    image_key: str
    patient_key: str
    accepted: Accepted | None  # None: unchanged, its row is in the catalog


@dataclass
class _Tally:
    """The parent's running state of one scan: counts, training units, duplicates, MR series.

    Results arrive in file order, so "the first file wins" for duplicates is deterministic.
    """

    catalog: dict[str, _CatalogEntry]
    owner: dict[str, str]  # image_key -> file_key of catalogued files found in this scan
    writer: _Writer
    reasons: Counter[str] = field(default_factory=Counter)
    catalogued: int = 0
    unchanged: int = 0
    images: list[TrainingImage] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # image_key -> file_key, this scan
    series: dict[str, list[_MrMember]] = field(default_factory=dict)

    def add(self, d: worker.Done, path: str) -> None:
        """Account for one worker answer (and buffer its database row)."""
        o = d.outcome
        if isinstance(o, worker.Unchanged):
            self._unchanged(o.file_key, path)
            return
        if isinstance(o, Accepted):
            first = self.seen.get(o.image_key) or self.owner.get(o.image_key)
            if first is not None and first != o.file_key:
                o = Quarantined(o.file_key, o.content_sha256, Reason.DUPLICATE_INSTANCE,
                                "another file holds the same SOPInstanceUID")  # fmt: skip
        if isinstance(o, Quarantined):
            self.reject(o)
            return
        self.seen[o.image_key] = o.file_key
        if o.modality == "MR":  # catalogued by the series pass, once the series is complete
            member = _MrMember(o.file_key, path, o.content_sha256, o.image_key, o.patient_key, o)
            self.series.setdefault(o.series_key or o.image_key, []).append(member)
            return
        self.writer.image(_image_row(o, d.cache_key))
        self.catalogued += 1
        self.images.append(TrainingImage(o.image_key, o.patient_key, o.series_key,
                                         d.cache_key or "", o.modality))  # fmt: skip

    def reject(self, q: Quarantined) -> None:
        """Quarantine one file."""
        self.reasons[q.reason.value] += 1
        self.writer.reject(q)

    def _unchanged(self, file_key: str, path: str) -> None:
        self.unchanged += 1
        e = self.catalog.get(file_key)
        if e is None:  # still quarantined, for the same content
            return
        self.seen[e.image_key] = file_key
        if e.modality == "MR":
            member = _MrMember(file_key, path, e.content_sha256, e.image_key, e.patient_key, None)
            self.series.setdefault(e.series_key or e.image_key, []).append(member)
        else:
            self.images.append(TrainingImage(e.image_key, e.patient_key, e.series_key,
                                             e.cache_key or "", e.modality))  # fmt: skip


def ingest(
    cfg: Config, *, key: bytes, engine=None, progress: Progress | None = None
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
        DatabaseUnavailable: the results database cannot be opened or written.
    """
    source = Path(cfg.dicom.source)
    if not source.is_dir():
        raise ConfigError(
            f"dicom.source {source} is not an existing folder",
            "set dicom.source in the config to the folder holding the DICOM files",
        )
    own = engine is None
    if own:
        engine = open_results_db(cfg.results.url)
    try:
        return _scan(cfg, source, key, engine, progress)
    finally:
        if own:
            engine.dispose()


def _scan(cfg: Config, source: Path, key: bytes, engine, progress: Progress | None):
    from pipeline.imaging.cache import PreprocessCache

    t0 = time.perf_counter()
    spec = preprocess_spec_for(cfg)
    cache_root = cache_dir_for(cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    cache = PreprocessCache(cache_root)
    catalog = _load_catalog(engine)
    bad = _load_quarantine(engine)
    files, fkeys = [], []  # paths and keys only: small; the MR series pass needs the paths
    for path, rel in discover(source):
        files.append(str(path))
        fkeys.append(pseudonyms.file_key(key, rel))
    found = set(fkeys)
    total = len(files)

    def tasks() -> Iterator[worker.Task]:
        for path, fk in zip(files, fkeys, strict=True):
            e = catalog.get(fk)
            known = () if e is None else (e.content_sha256, e.cache_key, e.modality)
            yield worker.Task(path, fk, *known, known_bad_sha256=bad.get(fk))

    settings = InspectSettings(key, tuple(cfg.dicom.modalities), cfg.dicom.reject_burned_in)
    state = worker.WorkerState(settings, spec, cache_root)
    workers = max(1, min(cfg.dicom.workers, total))
    chunk = max(1, min(32, total // (workers * 4)))
    executor = None
    if workers > 1:
        executor = ProcessPoolExecutor(
            workers, worker.mp_context(), initializer=worker.init_worker, initargs=(state, True)
        )
    else:
        worker.init_worker(state, subprocess=False)

    tally = _Tally(catalog, {e.image_key: fk for fk, e in catalog.items() if fk in found},
                   _Writer(engine))  # fmt: skip
    done = 0
    try:
        chunks = _chunks(tasks(), chunk)
        for batch in _ordered_map(worker.process_chunk, chunks, executor, 2 * workers):
            for d in batch:
                tally.add(d, files[done])
                done += 1
            if progress is not None:
                progress(done, total)
        tally.writer.flush()
        _mr_pass(tally, cache, spec, executor)
        tally.writer.flush()
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        try:
            tally.writer.flush()  # keep what was processed if the scan dies half-way
        except Exception:  # noqa: BLE001 - never mask the original error
            logger.warning("could not write the last chunk of the catalog", exc_info=False)
    result = IngestResult(total, tally.catalogued, tally.unchanged,
                          dict(sorted(tally.reasons.items())), tuple(tally.images),
                          time.perf_counter() - t0)  # fmt: skip
    logger.info(
        "ingest: %d files found, %d catalogued, %d unchanged, %d quarantined in %.1f s",
        result.found, result.catalogued, result.unchanged, result.n_quarantined, result.seconds,
    )  # fmt: skip
    return result


def _mr_pass(tally: _Tally, cache, spec, executor: ProcessPoolExecutor | None) -> None:
    """Preprocess each changed MR series once and write its instance rows.

    A series is rebuilt when an instance is new or changed, or its cached array is missing or
    was made under another spec. If it cannot be built, all its instances are quarantined
    (the unchanged ones leave the catalog and the unchanged count).
    """
    from db.records import ImageRow

    jobs: list[tuple[str, str, list[_MrMember]]] = []  # (group, cache key, members to write)
    for group in sorted(tally.series):
        members = sorted(tally.series[group], key=lambda m: m.image_key)
        combined = sha256_bytes("".join(sorted(m.content_sha256 for m in members)).encode())
        skey = cache.key(combined, spec)
        stale = skey not in cache or any(
            m.accepted is not None or tally.catalog[m.file_key].cache_key != skey for m in members
        )
        jobs.append((group, skey, members if stale else []))
    todo = [([m.path for m in ms], skey) for _, skey, ms in jobs if ms]
    failures = _ordered_map(worker.series_job, iter(todo), executor, 4)
    for group, skey, rewrite in jobs:
        if rewrite and (failed := next(failures)) is not None:
            for m in rewrite:  # the whole series leaves the catalog: one table per file
                tally.unchanged -= m.accepted is None
                tally.reject(Quarantined(m.file_key, m.content_sha256, *failed))
            continue
        for m in rewrite:
            if m.accepted is not None:
                tally.writer.image(_image_row(m.accepted, skey, n_slices=len(rewrite)))
                tally.catalogued += 1
            else:
                row = tally.catalog[m.file_key].row or {}
                tally.writer.image(ImageRow(**{**row, "cache_key": skey, "n_slices": len(rewrite)}))
        rep = min(tally.series[group], key=lambda m: m.image_key)
        tally.images.append(TrainingImage(rep.image_key, rep.patient_key, group, skey, "MR"))


# --- the `cmcl ingest` command --------------------------------------------------------------


def ingest_command(config: Path, console=None) -> IngestResult:
    """``cmcl ingest --config FILE``: run :func:`ingest` with a progress bar, print a summary.

    Args:
        config: The YAML config file.
        console: A ``rich.console.Console`` for the output (stdout by default).

    Returns:
        The scan's result (the CLI exits 0 even when files were quarantined).

    Raises:
        ConfigError: unusable config, or ``CMCL_PSEUDONYM_KEY`` missing.
        DatabaseUnavailable: the results database cannot be opened.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from pipeline.config import load_config

    console = console or Console()
    cfg = load_config(config)
    key = pseudonyms.pseudonym_key_from_env()
    engine = open_results_db(cfg.results.url)
    try:
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("ingesting DICOM files", total=None)
            result = ingest(
                cfg, key=key, engine=engine,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        from db.read import quarantine_counts

        in_quarantine = quarantine_counts(engine)
    finally:
        engine.dispose()

    table = Table(title=f"cmcl ingest: {result.found} files in {result.seconds:.1f} s")
    table.add_column("status")
    table.add_column("files (this scan)", justify="right")
    table.add_column("in the database", justify="right")
    table.add_row("catalogued (new or changed)", str(result.catalogued), "")
    table.add_row("unchanged", str(result.unchanged), "")
    table.add_row("training images", str(len(result.images)), "")
    for reason in sorted(set(result.quarantined) | set(in_quarantine)):
        n_scan, n_db = result.quarantined.get(reason, 0), in_quarantine.get(reason, 0)
        table.add_row(f"quarantined: {reason}", str(n_scan), str(n_db))
    console.print(table)
    return result
