"""URL passwords: found, refused, masked and scrubbed in one place (db.urls)."""

from __future__ import annotations

import sqlalchemy as sa

from db.urls import literal_password, mask_passwords, safe_url, scrub


def test_literal_password_but_not_an_environment_reference():
    assert literal_password("postgresql://cmcl:hunter2@db:5432/results") == "hunter2"
    assert literal_password("postgresql://cmcl:${CMCL_DB_PW}@db/results") is None
    assert literal_password("postgresql://cmcl@db/results") is None
    assert literal_password("sqlite:///cmcl.db") is None


def test_mask_passwords_walks_a_config_and_keeps_references():
    cfg = {
        "clinical": {"url": "postgresql://reader:s3cret@db/clinic"},
        "results": {"url": "postgresql://cmcl:${PW}@db/results"},
        "list": ["http://u:p4ss@pacs:8042/dicom-web", 3],
    }
    masked = mask_passwords(cfg)
    assert masked["clinical"]["url"] == "postgresql://reader:***@db/clinic"
    assert masked["results"]["url"] == "postgresql://cmcl:${PW}@db/results"
    assert masked["list"] == ["http://u:***@pacs:8042/dicom-web", 3]
    assert "s3cret" not in str(masked) and "p4ss" not in str(masked)


def test_safe_url_and_scrub_hide_the_password_but_keep_host_and_port():
    url = sa.make_url("postgresql://cmcl:pw-xyz@10.1.2.3:5432/results")
    shown = safe_url(url)
    assert "pw-xyz" not in shown and "10.1.2.3:5432" in shown
    assert scrub("auth failed for pw-xyz at 10.1.2.3", url) == "auth failed for *** at 10.1.2.3"
    assert safe_url("::not a url::") == "<unparseable URL>"
