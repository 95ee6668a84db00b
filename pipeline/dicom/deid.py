"""De-identification at the DICOM reader: PHI-free exception details, a pydicom guard.

Nothing here logs or raises with raw values: :func:`register_dataset_phi` hands a dataset's
identifying values to the log filter (:mod:`pipeline.redact`) as soon as it is read;
:func:`safe_detail` turns an exception into a fixed, PHI-free sentence; :func:`pydicom_guard`
captures pydicom's warnings and log records (which quote raw element values) and replaces
them with a count. Pseudonyms are :mod:`pipeline.pseudonyms`. See docs/privacy.md for what
this does and does not cover.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from pipeline.redact import register_phi

# Elements whose values identify a patient or institution and plausibly reach a log line:
# registered with the log filter of this process as soon as a file is read (a subset of
# PS3.15 Annex E; UIDs are caught by the filter's pattern instead).
PHI_ELEMENTS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
)


def register_dataset_phi(ds: Dataset) -> None:
    """Register the identifying values of ``ds`` with this process's PHI log filter."""
    register_phi(str(ds.get(name, "") or "") for name in PHI_ELEMENTS)


_GENERIC = {
    "InvalidDicomError": "not a DICOM file (no valid preamble or file meta)",
    "EOFError": "the file ends before its data is complete",
    "PermissionError": "the file cannot be read (permission denied)",
    "FileNotFoundError": "the file disappeared during the scan",
    "IsADirectoryError": "a directory was found where a file was expected",
    "MemoryError": "not enough memory to decode the image",
    "NotImplementedError": "no decoder is available for this data",
    "RuntimeError": "the pixel data decoder failed",
    "ValueError": "a value in the file is invalid or inconsistent",
    "TypeError": "a value in the file has an unexpected type",
    "KeyError": "a required element is missing",
    "AttributeError": "a required element is missing",
    "struct.error": "a binary field could not be unpacked",
    "error": "a binary field could not be unpacked",
    "OSError": "the file cannot be read",
}


def safe_detail(exc: BaseException) -> str:
    """A PHI-free description of ``exc``: its type and a fixed sentence, never its message.

    Exception messages from pydicom and numpy may quote element values (names, UIDs), so the
    message text is never used.
    """
    name = type(exc).__name__
    for cls in type(exc).__mro__:
        generic = _GENERIC.get(cls.__name__)
        if generic:
            return f"{name}: {generic}"
    return f"{name}: the file could not be processed"


@dataclass
class GuardReport:
    """What pydicom said while a guarded block ran, reduced to PHI-free counts."""

    warnings: int = 0
    log_records: int = 0
    categories: set[str] = field(default_factory=set)


class _Collect(logging.Handler):
    def __init__(self, report: GuardReport) -> None:
        super().__init__(level=logging.DEBUG)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.report.log_records += 1


@contextmanager
def pydicom_guard() -> Iterator[GuardReport]:
    """Capture pydicom's warnings and log records inside the block; keep only counts.

    pydicom quotes raw element values in its messages ("Invalid value for VR PN: 'DOE^J'"),
    so none of their text leaves the block; the caller logs the counts with a file key.
    """
    report = GuardReport()
    pd_logger = logging.getLogger("pydicom")
    handler = _Collect(report)
    saved = pd_logger.propagate
    pd_logger.addHandler(handler)
    pd_logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield report
            finally:
                report.warnings = len(caught)
                report.categories = {w.category.__name__ for w in caught}
    finally:
        pd_logger.removeHandler(handler)
        pd_logger.propagate = saved
