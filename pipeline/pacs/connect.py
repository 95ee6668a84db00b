"""The client of ``dicom.source`` when it names a PACS."""

from __future__ import annotations

from pipeline.config import DicomConfig, is_remote
from pipeline.errors import ConfigError
from pipeline.pacs.dicomweb import DicomWebSource
from pipeline.pacs.dimse import DimseSource
from pipeline.pacs.source import PacsSource


def open_source(dicom: DicomConfig) -> PacsSource:
    """The client of ``dicom.source`` (a DICOMweb URL or ``dimse://``).

    Raises:
        ConfigError: the source is malformed or a referenced secret is not set.
    """
    source = str(dicom.source)
    if source.lower().startswith(("http://", "https://")):
        return DicomWebSource.from_config(dicom)
    if source.lower().startswith("dimse://"):
        return DimseSource.from_config(dicom)
    raise ConfigError(f"dicom.source {source} is not a PACS address")


def check_source(dicom: DicomConfig) -> None:
    """When ``dicom.source`` is a PACS, fail now if it cannot be used (before any work).

    Raises:
        UserError: wrong credentials, no such service, unreachable (the fix named).
    """
    if not is_remote(dicom.source):
        return
    pacs = open_source(dicom)
    try:
        pacs.check()
    finally:
        pacs.close()
