"""What every PACS source offers the puller: a connection check, a search, a retrieve.

``dicom.source`` names a PACS when it is a DICOMweb base URL (``http://`` or ``https://``) or
``dimse://AET@host:port``; :func:`pipeline.pacs.connect.open_source` returns the matching client
(:mod:`pipeline.pacs.dicomweb`, :mod:`pipeline.pacs.dimse`). The UIDs a search returns are
identifying (ARCHITECTURE.md: no original UID leaves the process): :class:`RemoteInstance`
keeps them out of its ``repr``, and nothing here logs or raises with one. Errors name the
source as written in the config (``${PASSWORD}`` references unexpanded), never a request URL,
which would carry UIDs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

RETRIEVE_THREADS = 4  # concurrent retrieves per batch: enough to hide latency, gentle on a PACS


@dataclass(frozen=True, order=True)
class RemoteInstance:
    """One instance a search found; the UIDs stay in this process (not in ``repr``)."""

    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    sop_uid: str = field(repr=False)
    modality: str = ""  # from the search (a series attribute); "" when the PACS omits it


class RetrieveError(Exception):
    """One instance could not be retrieved; ``detail`` names no patient and no UID."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


class PacsSource(Protocol):
    """A PACS the puller can search and retrieve from (thread-safe ``retrieve``)."""

    name: str  # the source as the config writes it (secrets unexpanded): for messages

    def check(self) -> None:
        """Fail with a :class:`~db.errors.UserError` when the PACS cannot be used."""

    def search(self) -> list[RemoteInstance]:
        """Every instance of the studies that match ``dicom.query``."""

    def retrieve(self, inst: RemoteInstance) -> bytes:
        """The instance's Part 10 bytes as the PACS stores them (raises RetrieveError)."""

    def close(self) -> None:
        """Release connections."""
