"""The PHI log filter: registered values, UIDs and e-mail addresses are redacted."""

from __future__ import annotations

import logging

from pipeline import redact


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
