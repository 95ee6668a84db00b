"""What the results database already knows about the source's files, and writing what changed.

The catalog (``cmcl_images``) and the quarantine (``cmcl_quarantine``) together hold one row
per file found in ``dicom.source``. A scan reads both once (:func:`load_known`), buffers its new
rows and writes them in chunks (:class:`CatalogWriter`), and at the end forgets the rows of
files that are no longer there (:func:`forget_vanished`).

Forgetting deletes the rows rather than marking them: the catalog describes what the source
holds now (ARCHITECTURE.md: every file found is either catalogued or quarantined), nothing
else references a catalog row (``cmcl_latents`` of past runs carry their own keys), and a file
that comes back is simply catalogued again. Because a deletion is not undone by the next scan,
it only happens when the listing is trustworthy: never when a folder could not be listed, and
never when the source turns up empty while the database lists files (an unmounted share looks
exactly like that); the latter is refused with an error.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from db.read import stream_rows
from db.records import ImageRow, QuarantineRow
from db.write import remove_images, remove_quarantine, upsert_images, upsert_quarantine
from pipeline.dicom.discover import Discovery
from pipeline.dicom.validate import Accepted, Quarantined
from pipeline.errors import DataError

logger = logging.getLogger(__name__)

FLUSH_ROWS = 500  # rows buffered before a database write
# Reasons that depend on the config or on other files: such files are re-validated each scan.
RECHECK = frozenset({"unsupported_modality", "burned_in_annotation", "duplicate_instance"})
_ROW = tuple(ImageRow.__dataclass_fields__)  # the catalog columns an entry is made from


@dataclass(frozen=True, slots=True)  # slots: one per catalogued file
class CatalogEntry:
    """A catalogued file as the scan needs it (``row``: MR only, rewritten with its series)."""

    content_sha256: str
    image_key: str
    patient_key: str
    series_key: str | None
    modality: str
    cache_key: str | None
    row: ImageRow | None = None


@dataclass(frozen=True)
class Known:
    """The database's view of the source before a scan.

    Attributes:
        catalog: file_key -> entry of every catalogued file.
        quarantined: file_key of every quarantined file.
        settled_bad: file_key -> content hash of quarantined files whose verdict cannot change
            while their content does not (not in :data:`RECHECK`): skipped when unchanged.
        reasons: file_key -> reason code of every quarantined file.
    """

    catalog: dict[str, CatalogEntry]
    quarantined: frozenset[str]
    settled_bad: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.catalog) + len(self.quarantined)


def load_known(engine: sa.Engine) -> Known:
    """Read the catalog and the quarantine once, at the start of a scan (streamed: only the
    entries are kept, never the table's rows)."""
    catalog = {r["file_key"]: _entry(r) for r in stream_rows(engine, "cmcl_images", _ROW)}
    settled: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for r in stream_rows(engine, "cmcl_quarantine", ("file_key", "content_sha256", "reason")):
        reasons[r["file_key"]] = r["reason"]
        if r["content_sha256"] and r["reason"] not in RECHECK:
            settled[r["file_key"]] = r["content_sha256"]
    return Known(catalog, frozenset(reasons), settled, reasons)


def _entry(r: dict) -> CatalogEntry:
    row = (
        ImageRow(**{k: r[k] for k in ImageRow.__dataclass_fields__})
        if r["modality"] == "MR"
        else None
    )
    return CatalogEntry(
        r["content_sha256"], r["image_key"], r["patient_key"], r.get("series_key"),
        r["modality"], r.get("cache_key"), row,
    )  # fmt: skip


def image_row(acc: Accepted, cache_key: str | None, n_slices: int = 1) -> ImageRow:
    """The catalog row of an accepted file."""
    return ImageRow(
        image_key=acc.image_key, patient_key=acc.patient_key, study_key=acc.study_key,
        series_key=acc.series_key, file_key=acc.file_key, content_sha256=acc.content_sha256,
        modality=acc.modality, photometric=acc.photometric, rows=acc.rows, columns=acc.columns,
        n_slices=n_slices, transfer_syntax=acc.transfer_syntax, cache_key=cache_key,
    )  # fmt: skip


def recatalogued(entry: CatalogEntry, cache_key: str, n_slices: int) -> ImageRow:
    """An unchanged MR file's catalog row, pointing at its rebuilt series array."""
    assert entry.row is not None, "only MR entries keep their row"
    return ImageRow(**(asdict(entry.row) | {"cache_key": cache_key, "n_slices": n_slices}))


class CatalogWriter:
    """Buffers catalog and quarantine rows and writes them in chunks (a crash loses one chunk)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.images: list[ImageRow] = []
        self.quarantine: list[QuarantineRow] = []

    def image(self, row: ImageRow) -> None:
        """Catalog one file."""
        self.images.append(row)
        if len(self.images) >= FLUSH_ROWS:
            self.flush()

    def reject(self, q: Quarantined) -> None:
        """Quarantine one file."""
        self.quarantine.append(
            QuarantineRow(q.file_key, q.content_sha256, q.reason.value, q.detail)
        )
        if len(self.quarantine) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        if self.images:  # also drops these files' quarantine rows (one table per file)
            upsert_images(self.engine, self.images)
            self.images = []
        if self.quarantine:
            upsert_quarantine(self.engine, self.quarantine)
            self.quarantine = []


def check_listing(found: Discovery, known: Known, source: str) -> None:
    """Refuse a scan that found no file while the database lists some (an unmounted share?).

    Raises:
        DataError: the source holds no file but the catalog or quarantine is not empty.
    """
    if not found.files and found.complete and len(known):
        raise DataError(
            f"dicom.source {source} holds no file, but the results database lists {len(known)} "
            "files from it; refusing to forget them (is the folder or share mounted?)",
            "mount or restore the folder and run again; if it is empty on purpose, empty the "
            "catalog with SQL (DELETE FROM cmcl_images; DELETE FROM cmcl_quarantine)",
        )


def forget_vanished(engine: sa.Engine, known: Known, found: Discovery, found_keys: set[str]) -> int:
    """Delete the catalog and quarantine rows of files no longer in the source.

    Nothing is forgotten when a folder could not be listed (its files are unknown, not gone).

    Args:
        engine: the results engine.
        known: the database's view before the scan.
        found: this scan's listing.
        found_keys: the file keys of ``found.files``.

    Returns:
        The number of files forgotten.
    """
    if not found.complete:
        logger.warning(
            "ingest: %d folders could not be listed; no file is forgotten in this scan",
            found.unlisted,
        )
        return 0
    gone_images = sorted(set(known.catalog) - found_keys)
    gone_bad = sorted(known.quarantined - found_keys)
    if gone_images:
        remove_images(engine, gone_images)
    if gone_bad:
        remove_quarantine(engine, gone_bad)
    if gone_images or gone_bad:
        logger.info(
            "ingest: forgot %d catalogued and %d quarantined files no longer in dicom.source",
            len(gone_images),
            len(gone_bad),
        )
    return len(gone_images) + len(gone_bad)
