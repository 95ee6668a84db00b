"""`cmcl ingest` and `cmcl run` against a PACS that cannot be used: exit 2, the fix named, no
traceback, nothing written."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.pipeline.pacs.orthanc import free_port


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_an_unreachable_pacs_exits_2_before_any_work(command, tmp_path, key_env, monkeypatch):
    monkeypatch.setenv("PACS_PASSWORD", "secret-never-printed")
    results = tmp_path / "results.db"
    sqlite3.connect(tmp_path / "clinic.db").close()
    cfg = tmp_path / "cmcl.yaml"
    cfg.write_text(
        f"dicom:\n  source: http://cmcl:${{PACS_PASSWORD}}@127.0.0.1:{free_port()}/dicom-web\n"
        f"clinical:\n  url: sqlite:///{tmp_path / 'clinic.db'}\n  query: SELECT 1\n"
        f"  id_column: mrn\nresults:\n  url: sqlite:///{results}\n"
    )
    res = CliRunner().invoke(app, [command, "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "cannot be reached" in res.output and "fix:" in res.output
    assert "Traceback" not in res.output and "secret-never-printed" not in res.output
    assert not results.exists()  # checked before the run record or the catalog
