"""The PHI log filter: redacts identifying text from log records before they are written.

Ingest registers the identifying values it reads (:func:`register_phi`, through
:func:`pipeline.dicom.deid.register_dataset_phi`: PatientID, names, birth date, accession
number, institution); :class:`PhiLogFilter`, attached to a handler, redacts those values, DICOM
UIDs, e-mail addresses and URL passwords from every record it passes (message, traceback and
stack). What is not identifying stays readable: an IPv4 address, a host name, a port. The CLI
attaches the filter to its handlers and the ingest workers to theirs. See docs/privacy.md.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from db.urls import mask_passwords


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
# Dotted numbers of four or more parts: DICOM UIDs (a root such as 1.2.840.10008 and usually
# many more parts; they can identify a study), unless the token is an IPv4 address.
_DOTTED = re.compile(r"\b\d+(?:\.\d+){3,}\b")
# E-mail addresses; not a URL's user@host (after "//"), not user@host:port or user@host/path.
_EMAIL = re.compile(r"(?<![\w.+/-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b(?!\.?[\w-]|:\d|/)")
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


def is_ipv4(token: str) -> bool:
    """Whether a dotted number is an IPv4 address (four parts, each at most 255).

    A server's address (``127.0.0.1:5432``, ``http://10.0.0.5:8042``) is not PHI and operators
    need it; a DICOM UID has a registered root (``1.2.840.10008``, ``1.2.826.0.1.3680043``) and
    nearly always more than four parts or a part above 255.
    """
    parts = token.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts)


def redact(text: str) -> str:
    """``text`` with registered PHI, DICOM UIDs, e-mail addresses and URL passwords redacted.

    Server addresses stay readable: IPv4 addresses, host names in URLs and ports are kept.
    """
    pattern = _REGISTRY.regex()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _DOTTED.sub(lambda m: m[0] if is_ipv4(m[0]) else REDACTED, text)
    return mask_passwords(_EMAIL.sub(REDACTED, text))


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
