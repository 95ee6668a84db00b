"""The training units of a scan, read back from the catalog when they are used.

A scan keeps no training unit per file in memory (its peak would grow with the cohort): a CR/DX
unit is its file's catalog row (``cmcl_images``), so :class:`TrainingUnits` reads those rows
again, in batches, for the files the scan found, after the scan has written them and forgotten
the files that vanished. The MR units (one per series, far fewer than files) are kept by the
scan (:func:`pipeline.ingest.tally.mr_pass`). Counting the units reads nothing, so an
ingest-only command never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, overload

import sqlalchemy as sa

from db.bulk import chunks
from db.read import catalog_of_files
from pipeline.ingest.tally import TrainingImage

logger = logging.getLogger(__name__)

READ_BATCH = 2000  # file keys per catalog query
_COLUMNS = ("file_key", "image_key", "patient_key", "series_key", "cache_key", "modality")


class TrainingUnits(Sequence[TrainingImage]):
    """Every training unit of a scan: CR/DX instances, then MR series (loaded on first use).

    Order: in file order (a folder), or, with ``by_key``, by series key then image key (a PACS,
    whose instances arrive in download order); MR series after the instances either way.
    Equal to any sequence holding the same units in the same order.

    Args:
        engine: The results engine the scan wrote to.
        file_keys: The file keys the scan found, in file order.
        n_planar: How many of them are catalogued CR/DX units (counted by the scan).
        mr: The MR units, one per series, in series-key order.
        by_key: Order by series and image key instead of file order.
    """

    def __init__(
        self,
        engine: sa.Engine,
        file_keys: Sequence[str],
        n_planar: int,
        mr: Sequence[TrainingImage],
        by_key: bool = False,
    ) -> None:
        self._engine = engine
        self._file_keys = file_keys
        self._n_planar = n_planar
        self._mr = tuple(mr)
        self._by_key = by_key
        self._loaded: tuple[TrainingImage, ...] | None = None

    def __len__(self) -> int:
        if self._loaded is not None:
            return len(self._loaded)
        return self._n_planar + len(self._mr)

    @overload
    def __getitem__(self, i: int) -> TrainingImage: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[TrainingImage, ...]: ...
    def __getitem__(self, i: int | slice) -> TrainingImage | tuple[TrainingImage, ...]:
        return self.load()[i]

    def __iter__(self) -> Iterator[TrainingImage]:
        return iter(self.load())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self.load() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a tuple, but mutable state

    def __repr__(self) -> str:
        return f"TrainingUnits({len(self)} units)"

    def load(self) -> tuple[TrainingImage, ...]:
        """The units as a tuple (read from the catalog once, then kept)."""
        if self._loaded is None:
            planar = self._planar()
            if len(planar) != self._n_planar:
                logger.warning(
                    "ingest: the catalog holds %d CR/DX images of this scan's files, the scan "
                    "counted %d (was the catalog changed since?)", len(planar), self._n_planar,
                )  # fmt: skip
            mr = sorted(self._mr, key=_by_key) if self._by_key else self._mr
            self._loaded = (*planar, *mr)
            self._file_keys = ()  # the listing is no longer needed
        return self._loaded

    def _planar(self) -> list[TrainingImage]:
        """The CR/DX units: catalog rows of the found files, in file (or key) order."""
        out: list[TrainingImage] = []
        for batch in chunks(self._file_keys, READ_BATCH):
            rows = {r["file_key"]: r for r in catalog_of_files(self._engine, batch, _COLUMNS)}
            out += [_unit(rows[fk]) for fk in batch if fk in rows and rows[fk]["modality"] != "MR"]
        return sorted(out, key=_by_key) if self._by_key else out


def _unit(row: dict[str, Any]) -> TrainingImage:
    return TrainingImage(row["image_key"], row["patient_key"], row["series_key"],
                         row["cache_key"] or "", row["modality"])  # fmt: skip


def _by_key(t: TrainingImage) -> tuple[str, str]:
    return t.series_key or "", t.image_key
