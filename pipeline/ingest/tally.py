"""The parent side of a scan: account for each worker answer, decide duplicates, build MR series.

Results arrive in file order, so "the first file wins" for duplicate instances (the same
SOPInstanceUID in two files) is deterministic: the others are quarantined as
``duplicate_instance``. A file catalogued by an earlier scan and still there wins over any new
file. The scan keeps no per-file map for this: each chunk's image keys are looked up in the
catalog table (an indexed primary key; rows already flushed), in the writer's unflushed rows and
among the MR instances waiting for their series (:meth:`Tally.add_chunk`), so the parent's memory
stays flat in the number of files.

Training units (:class:`TrainingImage`):

* CR/DX: one per accepted instance; its ``cache_key`` is the instance's preprocessed image.
* MR: one per series (SeriesInstanceUID). After the per-file pass, each series whose instances
  changed is read as a volume and reduced to 2D (``dicom.mri_reduction``) by
  :func:`pipeline.imaging.mri.preprocess_series` (:func:`mr_pass`); every instance row of the
  series carries the series' ``cache_key`` and ``n_slices``; the unit's ``image_key`` is the
  smallest instance key of the series (a deterministic representative that is a real catalog
  row).

The scan only counts the CR/DX units; they are read back from the catalog afterwards
(:class:`pipeline.ingest.units.TrainingUnits`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from db.read import image_holders
from pipeline.dicom import worker
from pipeline.dicom.validate import Accepted, Quarantined, Reason, sha256_bytes
from pipeline.imaging.cache import PreprocessCache
from pipeline.imaging.preprocess import PreprocessSpec
from pipeline.ingest.catalog import CatalogEntry, CatalogWriter, Known, image_row, recatalogued


@dataclass(frozen=True, slots=True)
class TrainingImage:
    """One training unit: an instance (CR/DX) or a series (MR), with its cached array key
    (slots: a scan keeps one per image, hundreds of thousands of them)."""

    image_key: str
    patient_key: str
    series_key: str | None
    cache_key: str
    modality: str


@dataclass
class _MrMember:
    file_key: str
    path: str
    content_sha256: str
    image_key: str
    patient_key: str
    accepted: Accepted | None  # None: unchanged, its row is in the catalog


@dataclass
class Tally:
    """The running state of one scan: counts, duplicates, MR series.

    Nothing is kept per CR/DX file: its row goes to the writer and it is counted in ``planar``.
    """

    catalog: dict[str, CatalogEntry]
    owner: dict[str, str]  # image_key -> file_key of catalogued files found in this scan
    writer: CatalogWriter
    found: AbstractSet[str]  # file keys of this scan's listing
    reasons: Counter[str] = field(default_factory=Counter)
    catalogued: int = 0
    unchanged: int = 0
    planar: int = 0  # CR/DX training units (catalogued or unchanged)
    mr_units: list[TrainingImage] = field(default_factory=list)  # one per series, by mr_pass
    mr_held: dict[str, str] = field(default_factory=dict)  # image_key -> file_key, MR accepted
    series: dict[str, list[_MrMember]] = field(default_factory=dict)

    def add_chunk(self, dones: Sequence[worker.Done], paths: Sequence[str]) -> None:
        """Account for worker answers in file order (and buffer their database rows).

        Args:
            dones: The answers of consecutive files.
            paths: Their paths (MR series are read again from them).
        """
        keys = [d.outcome.image_key for d in dones if isinstance(d.outcome, Accepted)]
        held = self._holders(keys)
        for d, path in zip(dones, paths, strict=True):
            self._add(d, path, held)

    def add(self, d: worker.Done, path: str) -> None:
        """Account for one worker answer (:meth:`add_chunk` of one file)."""
        self.add_chunk([d], [path])

    def reject(self, q: Quarantined) -> None:
        """Quarantine one file."""
        self.reasons[q.reason.value] += 1
        self.writer.reject(q)

    def _holders(self, keys: list[str]) -> dict[str, str]:
        """image_key -> file_key of the found files that held ``keys`` before this chunk.

        A key is held by a catalog row (written earlier in this scan, or by an earlier scan: rows
        of vanished files do not count), by a row the writer still buffers, or by an MR instance
        waiting for its series. Only keys of the chunk are looked up (one query per chunk).
        """
        if not keys:
            return {}
        held = {k: fk for k, fk in image_holders(self.writer.engine, keys).items()
                if fk in self.found}  # fmt: skip
        wanted = set(keys)
        held |= {r.image_key: r.file_key for r in self.writer.images if r.image_key in wanted}
        held |= {k: self.mr_held[k] for k in wanted if k in self.mr_held}
        return held

    def _add(self, d: worker.Done, path: str, held: dict[str, str]) -> None:
        o = d.outcome
        if isinstance(o, worker.Unchanged):
            self._unchanged(o.file_key, path)
            return
        if isinstance(o, Accepted):
            first = held.get(o.image_key) or self.owner.get(o.image_key)
            if first is not None and first != o.file_key:
                o = Quarantined(o.file_key, o.content_sha256, Reason.DUPLICATE_INSTANCE,
                                "another file holds the same SOPInstanceUID")  # fmt: skip
        if isinstance(o, Quarantined):
            self.reject(o)
            return
        held[o.image_key] = o.file_key  # for the later files of this chunk
        if o.modality == "MR":  # catalogued by the series pass, once the series is complete
            self.mr_held[o.image_key] = o.file_key
            member = _MrMember(o.file_key, path, o.content_sha256, o.image_key, o.patient_key, o)
            self.series.setdefault(o.series_key or o.image_key, []).append(member)
            return
        self.writer.image(image_row(o, d.cache_key))
        self.catalogued += 1
        self.planar += 1

    def _unchanged(self, file_key: str, path: str) -> None:
        self.unchanged += 1
        e = self.catalog.get(file_key)
        if e is None:  # still quarantined, for the same content
            return
        if e.modality == "MR":
            member = _MrMember(file_key, path, e.content_sha256, e.image_key, e.patient_key, None)
            self.series.setdefault(e.series_key or e.image_key, []).append(member)
        else:
            self.planar += 1


def ordered_map(
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


def series_cache_key(
    content_sha256s: list[str], cache: PreprocessCache, spec: PreprocessSpec
) -> str:
    """The cache key of an MR series' array: its instances' content hashes, in any order."""
    combined = sha256_bytes("".join(sorted(content_sha256s)).encode())
    return cache.key(combined, spec)


def task_for(path: str, file_key: str, known: Known) -> worker.Task:
    """The worker task of one file, with what the catalog and quarantine know about it."""
    e = known.catalog.get(file_key)
    seen = () if e is None else (e.content_sha256, e.cache_key, e.modality)
    return worker.Task(path, file_key, *seen, known_bad_sha256=known.settled_bad.get(file_key))


def mr_pass(
    tally: Tally,
    cache: PreprocessCache,
    spec: PreprocessSpec,
    executor: ProcessPoolExecutor | None,
) -> None:
    """Preprocess each changed MR series once and write its instance rows.

    A series is rebuilt when an instance is new or changed, or its cached array is missing or
    was made under another spec. If it cannot be built, all its instances are quarantined
    (the unchanged ones leave the catalog and the unchanged count).
    """
    jobs: list[tuple[str, str, list[_MrMember]]] = []  # (group, cache key, members to write)
    for group in sorted(tally.series):
        members = sorted(tally.series[group], key=lambda m: m.image_key)
        skey = series_cache_key([m.content_sha256 for m in members], cache, spec)
        stale = skey not in cache or any(
            m.accepted is not None or tally.catalog[m.file_key].cache_key != skey for m in members
        )
        jobs.append((group, skey, members if stale else []))
    todo = [([m.path for m in ms], skey) for _, skey, ms in jobs if ms]
    failures = ordered_map(worker.series_job, iter(todo), executor, 4)
    for group, skey, rewrite in jobs:
        if rewrite and (failed := next(failures)) is not None:
            for m in rewrite:  # the whole series leaves the catalog: one table per file
                tally.unchanged -= m.accepted is None
                tally.reject(Quarantined(m.file_key, m.content_sha256, *failed))
            continue
        for m in rewrite:
            if m.accepted is not None:
                tally.writer.image(image_row(m.accepted, skey, n_slices=len(rewrite)))
                tally.catalogued += 1
            else:
                tally.writer.image(recatalogued(tally.catalog[m.file_key], skey, len(rewrite)))
        rep = min(tally.series[group], key=lambda m: m.image_key)
        tally.mr_units.append(TrainingImage(rep.image_key, rep.patient_key, group, skey, "MR"))
