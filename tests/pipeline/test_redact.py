"""The PHI log filter: registered values, UIDs and e-mail addresses are redacted."""

from __future__ import annotations

import logging

import pytest

from pipeline import redact


@pytest.fixture(autouse=True)
def _empty_registry():
    """The registry is per process: start and end every test without registered values."""
    redact.clear_phi_registry()
    yield
    redact.clear_phi_registry()


def test_filter_redacts_registered_values_uids_and_tracebacks(caplog):
    redact.clear_phi_registry()
    redact.register_phi(["ZEBRA^QUENTIN", "MRN-777-XYZ", "Hospital of Canaries"])
    log = logging.getLogger("test.deid")
    caplog.handler.addFilter(redact.PhiLogFilter())
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
    assert text.count(redact.REDACTED) >= 5
    assert "failed" in text and "ValueError" in text  # the record itself still gets through
    redact.clear_phi_registry()


def test_registry_is_bounded():
    redact.clear_phi_registry()
    for i in range(redact._REGISTRY.capacity + 50):
        redact.register_phi([f"value-{i:06d}"])
    assert len(redact._REGISTRY.values) == redact._REGISTRY.capacity
    redact.clear_phi_registry()


def test_filter_redacts_whole_tokens_only():
    redact.clear_phi_registry()
    redact.register_phi(["TEST^PATIENT"])
    assert redact.redact("folder TEST_PATIENT/x") == "folder [REDACTED]_[REDACTED]/x"
    assert redact.redact("outpatients contest") == "outpatients contest"  # not inside words
    redact.clear_phi_registry()


@pytest.mark.parametrize(
    "text",
    [
        "uid 1.2.826.0.1.3680043.8.498.123",
        "sop class 1.2.840.10008.5.1.4.1.1.2 seen",
        "study 1.2.3.4.5",  # five parts: a UID, not an address
        "reported by john.doe@hospital.org.",
        "mailto:jane@clinic.example.com",
    ],
)
def test_uids_and_emails_are_still_redacted(text):
    out = redact.redact(text)
    assert redact.REDACTED in out
    assert not any(tok in out for tok in ("3680043", "10008", "1.2.3.4.5", "john.doe", "jane@"))


@pytest.mark.parametrize(
    "text",
    [
        "Starting temporary server on http://127.0.0.1:8548",
        "could not connect to postgres@127.0.0.1:5432",
        'connection to server at "10.0.0.5", port 5432 failed: Connection refused',
        "results database postgresql+psycopg://reader:***@db.hospital.org:5432/clinic",
        "postgres@db.hospital.org:5432 is down",
        "pacs http://cmcl:${PACS_PASSWORD}@192.168.1.20:8042/dicom-web",
    ],
)
def test_server_addresses_and_ports_stay_readable(text):
    assert redact.redact(text) == text


def test_url_passwords_are_masked_in_log_records(caplog):
    log = logging.getLogger("test.redact")
    caplog.handler.addFilter(redact.PhiLogFilter())
    with caplog.at_level(logging.INFO):
        log.info("opening %s", "postgresql://cmcl:hunter2@10.1.2.3:5432/results")
    assert "hunter2" not in caplog.text
    assert "postgresql://cmcl:***@10.1.2.3:5432/results" in caplog.text
