"""The client of ``dicom.source`` when it names a PACS."""

from __future__ import annotations

from pipeline.config import DicomConfig
from pipeline.errors import ConfigError
from pipeline.pacs.dicomweb import DicomWebSource
from pipeline.pacs.source import PacsSource


def open_source(dicom: DicomConfig) -> PacsSource:
    """The client of ``dicom.source`` (a DICOMweb URL or ``dimse://``).

    Raises:
        ConfigError: the source is malformed or a referenced secret is not set.
    """
    source = str(dicom.source)
    if source.lower().startswith(("http://", "https://")):
        return DicomWebSource.from_config(dicom)
    raise ConfigError(f"dicom.source {source} is not a PACS address")
