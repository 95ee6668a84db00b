"""Pseudonyms, the key from the environment, the PHI log filter and the pydicom guard."""

from __future__ import annotations

import hashlib
import hmac
import logging
import warnings

import pytest

from pipeline import deid
from pipeline.errors import ConfigError

KEY = bytes.fromhex("ab" * 32)


def test_patient_key_is_hmac_sha256_of_the_patient_id():
    expected = hmac.new(KEY, b"MRN-0042", hashlib.sha256).hexdigest()
    assert deid.patient_key(KEY, "MRN-0042") == expected
    assert deid.patient_key(KEY, " MRN-0042 ") == expected  # DICOM padding ignored
    assert deid.patient_key(b"other-key-16bytes!", "MRN-0042") != expected


def test_keys_differ_by_value_and_are_hex():
    keys = {
        deid.image_key(KEY, "1.2.3.4.5"),
        deid.series_key(KEY, "1.2.3.4.6"),
        deid.study_key(KEY, "1.2.3.4.7"),
        deid.file_key(KEY, "a/b.dcm"),
    }
    assert len(keys) == 4
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)


def test_key_from_env_hex_and_text(monkeypatch):
    monkeypatch.setenv(deid.KEY_ENV, "ab" * 32)
    assert deid.pseudonym_key_from_env() == KEY
    monkeypatch.setenv(deid.KEY_ENV, "a long passphrase that is not hex")
    assert deid.pseudonym_key_from_env() == b"a long passphrase that is not hex"


@pytest.mark.parametrize("value", [None, "", "short"])
def test_missing_or_short_key_names_the_variable_and_the_fix(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(deid.KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(deid.KEY_ENV, value)
    with pytest.raises(ConfigError) as err:
        deid.pseudonym_key_from_env()
    assert deid.KEY_ENV in str(err.value)
    assert "secrets.token_hex" in str(err.value)


def test_filter_redacts_registered_values_uids_and_tracebacks(caplog):
    deid.clear_phi_registry()
    deid.register_phi(["ZEBRA^QUENTIN", "MRN-777-XYZ", "Hospital of Canaries"])
    log = logging.getLogger("test.deid")
    caplog.handler.addFilter(deid.PhiLogFilter())
    with caplog.at_level(logging.INFO):
        log.info("patient %s at %s", "MRN-777-XYZ", "Hospital of Canaries")
        log.info("name quentin zebra, uid 1.2.826.0.1.3680043.8.498.123")
        try:
            raise ValueError("bad value ZEBRA^QUENTIN")
        except ValueError:
            log.exception("failed")
    text = caplog.text
    for leak in ("MRN-777-XYZ", "Canaries", "ZEBRA", "QUENTIN", "1.2.826.0.1.3680043"):
        assert leak.lower() not in text.lower()
    assert text.count(deid.REDACTED) >= 5
    assert "failed" in text and "ValueError" in text  # the record itself still gets through
    deid.clear_phi_registry()


def test_registry_is_bounded():
    deid.clear_phi_registry()
    for i in range(deid._REGISTRY.capacity + 50):
        deid.register_phi([f"value-{i:06d}"])
    assert len(deid._REGISTRY.values) == deid._REGISTRY.capacity
    deid.clear_phi_registry()


def test_safe_detail_never_quotes_the_message():
    detail = deid.safe_detail(ValueError("PatientName 'DOE^JANE' is invalid"))
    assert detail.startswith("ValueError: ")
    assert "DOE" not in detail
    assert deid.safe_detail(PermissionError("/data/DOE_JANE.dcm")).startswith("PermissionError")
    assert "DOE" not in deid.safe_detail(PermissionError("/data/DOE_JANE.dcm"))


def test_pydicom_guard_swallows_text_and_counts(caplog):
    with caplog.at_level(logging.DEBUG), deid.pydicom_guard() as said:
        warnings.warn("Invalid value 'DOE^JANE' for VR PN", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("element value SECRET-ID-99 looks wrong")
    assert said.warnings == 1 and said.log_records == 1
    assert said.categories == {"UserWarning"}
    assert "DOE" not in caplog.text and "SECRET-ID-99" not in caplog.text


def test_filter_redacts_whole_tokens_only():
    deid.clear_phi_registry()
    deid.register_phi(["TEST^PATIENT"])
    assert deid.redact("folder TEST_PATIENT/x") == "folder [REDACTED]_[REDACTED]/x"
    assert deid.redact("outpatients contest") == "outpatients contest"  # not inside words
    deid.clear_phi_registry()
