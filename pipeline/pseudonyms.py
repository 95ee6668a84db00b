"""Keyed pseudonyms: the one way a patient, an image or a file is named after ingestion.

ARCHITECTURE.md fixes the scheme: ``patient_key = HMAC-SHA256(key, PatientID)`` (hex) and the
same HMAC over the SOP instance / series / study UID and over a file's path relative to
``dicom.source``. The key (``CMCL_PSEUDONYM_KEY``) stays with the data steward; without it a
pseudonym cannot be linked back to a patient, and with it the clinical join recomputes
``patient_key`` from the MRN column. Both the DICOM side (:mod:`pipeline.dicom.validate`) and
the clinical side (:mod:`pipeline.clinical.source`) hash with these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from pipeline.errors import ConfigError

KEY_ENV = "CMCL_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
_GENERATE = 'python -c "import secrets; print(secrets.token_hex(32))"'


def key_bytes(raw: str) -> bytes:
    """The key as bytes: a hex string is decoded, any other string is its UTF-8 bytes."""
    raw = raw.strip()
    try:
        return bytes.fromhex(raw)
    except ValueError:
        return raw.encode("utf-8")


def pseudonym_key_from_env() -> bytes:
    """The pseudonymisation key from ``CMCL_PSEUDONYM_KEY`` (see :func:`key_bytes`).

    Returns:
        The key, at least 16 bytes.

    Raises:
        ConfigError: the variable is unset or too short (the message says how to make one).
    """
    raw = os.environ.get(KEY_ENV, "").strip()
    fix = f"export {KEY_ENV}=$({_GENERATE}) and keep it with the data steward"
    if not raw:
        raise ConfigError(f"{KEY_ENV} is not set (it keys the patient pseudonyms)", fix)
    key = key_bytes(raw)
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
