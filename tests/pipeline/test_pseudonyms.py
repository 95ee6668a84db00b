"""Pseudonyms: HMAC-SHA256 keys and the key from the environment."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pipeline import pseudonyms
from pipeline.errors import ConfigError

KEY = bytes.fromhex("ab" * 32)


def test_patient_key_is_hmac_sha256_of_the_patient_id():
    expected = hmac.new(KEY, b"MRN-0042", hashlib.sha256).hexdigest()
    assert pseudonyms.patient_key(KEY, "MRN-0042") == expected
    assert pseudonyms.patient_key(KEY, " MRN-0042 ") == expected  # DICOM padding ignored
    assert pseudonyms.patient_key(b"other-key-16bytes!", "MRN-0042") != expected


def test_keys_differ_by_value_and_are_hex():
    keys = {
        pseudonyms.image_key(KEY, "1.2.3.4.5"),
        pseudonyms.series_key(KEY, "1.2.3.4.6"),
        pseudonyms.study_key(KEY, "1.2.3.4.7"),
        pseudonyms.file_key(KEY, "a/b.dcm"),
    }
    assert len(keys) == 4
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)


def test_key_from_env_hex_and_text(monkeypatch):
    monkeypatch.setenv(pseudonyms.KEY_ENV, "ab" * 32)
    assert pseudonyms.pseudonym_key_from_env() == KEY
    monkeypatch.setenv(pseudonyms.KEY_ENV, "a long passphrase that is not hex")
    assert pseudonyms.pseudonym_key_from_env() == b"a long passphrase that is not hex"


@pytest.mark.parametrize("value", [None, "", "short"])
def test_missing_or_short_key_names_the_variable_and_the_fix(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(pseudonyms.KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(pseudonyms.KEY_ENV, value)
    with pytest.raises(ConfigError) as err:
        pseudonyms.pseudonym_key_from_env()
    assert pseudonyms.KEY_ENV in str(err.value)
    assert "secrets.token_hex" in str(err.value)
