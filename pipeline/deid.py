"""De-identification: keyed pseudonyms, a PHI-redacting log filter, a pydicom warnings guard.

Pseudonyms follow ARCHITECTURE.md: ``patient_key = HMAC-SHA256(key, PatientID)`` (hex) and
the same HMAC over the SOP instance / series / study UID and over a file's path relative to
``dicom.source``. The key (``CMCL_PSEUDONYM_KEY``) stays with the data steward; without it a
pseudonym cannot be linked back to a patient, and with it the clinical join can recompute
``patient_key`` from the MRN column.

Nothing here logs or raises with raw values: :func:`safe_detail` turns an exception into a
fixed, PHI-free sentence; :class:`PhiLogFilter` redacts registered PHI strings and DICOM-UID
-looking tokens from any log record that reaches a filtered handler; :func:`pydicom_guard`
captures pydicom's warnings and log records (which quote raw element values) and replaces
them with a count. See docs/privacy.md for what this does and does not cover.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

KEY_ENV = "CMCL_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
_GENERATE = 'python -c "import secrets; print(secrets.token_hex(32))"'


def pseudonym_key_from_env() -> bytes:
    """The pseudonymisation key from ``CMCL_PSEUDONYM_KEY``.

    A hex string is decoded to bytes; any other string is used as its UTF-8 bytes.

    Returns:
        The key, at least 16 bytes.

    Raises:
        ConfigError: the variable is unset or too short (the message says how to make one).
    """
    raw = os.environ.get(KEY_ENV, "").strip()
    fix = f"export {KEY_ENV}=$({_GENERATE}) and keep it with the data steward"
    if not raw:
        raise ConfigError(f"{KEY_ENV} is not set (it keys the patient pseudonyms)", fix)
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = raw.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{KEY_ENV} is too short ({len(key)} bytes; at least {MIN_KEY_BYTES} are needed)", fix
        )
    return key


def _hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()


def patient_key(key: bytes, patient_id: str) -> str:
    """HMAC-SHA256(key, PatientID) as 64 hex characters (surrounding blanks ignored)."""
    return _hmac_hex(key, patient_id)


def image_key(key: bytes, sop_instance_uid: str) -> str:
    """HMAC-SHA256(key, SOPInstanceUID) as hex: the pseudonym of one image instance."""
    return _hmac_hex(key, sop_instance_uid)


def series_key(key: bytes, series_instance_uid: str) -> str:
    """HMAC-SHA256(key, SeriesInstanceUID) as hex."""
    return _hmac_hex(key, series_instance_uid)


def study_key(key: bytes, study_instance_uid: str) -> str:
    """HMAC-SHA256(key, StudyInstanceUID) as hex."""
    return _hmac_hex(key, study_instance_uid)


def file_key(key: bytes, relpath: str) -> str:
    """HMAC-SHA256(key, path relative to dicom.source, '/'-separated) as hex.

    File names often embed names or MRNs, so a file is only ever named by this key.
    """
    return hmac.new(key, relpath.encode("utf-8"), hashlib.sha256).hexdigest()


# --- the PHI registry and the log filter ---------------------------------------------------


@dataclass
class _Registry:
    """Recently read PHI strings of this process (bounded so memory does not grow)."""

    capacity: int = 5_000
    values: OrderedDict[str, None] = field(default_factory=OrderedDict)
    pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if value in self.values:
            self.values.move_to_end(value)
            return
        self.values[value] = None
        self.pattern = None
        while len(self.values) > self.capacity:
            self.values.popitem(last=False)

    def regex(self) -> re.Pattern[str] | None:
        if self.pattern is None and self.values:
            alts = sorted(self.values, key=len, reverse=True)  # longest first
            body = "|".join(re.escape(v) for v in alts)
            # whole tokens only ("PATIENT" must not eat "patient_key"); "_" and "-" separate
            self.pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9])", re.I)
        return self.pattern


_REGISTRY = _Registry()
_MIN_PHI_LEN = 3  # shorter tokens ("M", "12") would redact ordinary text
# DICOM UIDs (1.2.840.x.y...), ISO/US dates of birth written as 8 digits, e-mail addresses
_UID_RE = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_NAME_PARTS = re.compile(r"[\^=\s,]+")
REDACTED = "[REDACTED]"


def register_phi(values: Iterable[object]) -> None:
    """Remember identifying strings read in this process so log records can be redacted.

    Person names are registered whole and by component (``DOE^JOHN`` adds ``DOE``, ``JOHN``).
    Values shorter than three characters are ignored.
    """
    for v in values:
        s = str(v).strip() if v is not None else ""
        if len(s) < _MIN_PHI_LEN:
            continue
        _REGISTRY.add(s)
        if "^" in s or " " in s:
            for p in _NAME_PARTS.split(s):
                if len(p) >= _MIN_PHI_LEN:
                    _REGISTRY.add(p)


def clear_phi_registry() -> None:
    """Forget every registered value (tests; a long-lived worker between cohorts)."""
    _REGISTRY.values.clear()
    _REGISTRY.pattern = None


def redact(text: str) -> str:
    """``text`` with registered PHI, DICOM-UID-like tokens and e-mail addresses redacted."""
    pattern = _REGISTRY.regex()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _UID_RE.sub(REDACTED, text)
    return _EMAIL_RE.sub(REDACTED, text)


class PhiLogFilter(logging.Filter):
    """Redacts PHI from every record passing through the handler it is attached to.

    The message is rendered (``msg % args``) and redacted, as are a formatted traceback and
    stack; the record is then passed on (the filter never drops records).
    """

    _fmt = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._fmt.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# --- exceptions and pydicom's own messages --------------------------------------------------

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
