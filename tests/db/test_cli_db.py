"""`cmcl db upgrade --config FILE` on SQLite and PostgreSQL, and its clean error."""

from __future__ import annotations

import sqlalchemy as sa
from typer.testing import CliRunner

from db.engine import head_revision
from flows.cli import app


def _config(tmp_path, url: str):
    path = tmp_path / "cmcl.yaml"
    path.write_text(
        "dicom: {source: .}\n"
        "clinical: {url: 'sqlite:///clinic.db', query: 'SELECT 1', id_column: mrn}\n"
        f"results: {{url: '{url}'}}\n"
    )
    return path


def test_db_upgrade_migrates_and_prints_revision(tmp_path, results_url):
    runner = CliRunner()
    res = runner.invoke(app, ["db", "upgrade", "--config", str(_config(tmp_path, results_url))])
    assert res.exit_code == 0, res.output
    assert f"revision {head_revision()}" in res.output
    eng = sa.create_engine(results_url.replace("postgresql://", "postgresql+psycopg://", 1))
    assert "cmcl_runs" in sa.inspect(eng).get_table_names()
    eng.dispose()


def test_db_upgrade_unreachable_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CMCL_TEST_PW", "pw-should-not-print")
    url = "postgresql://cmcl:${CMCL_TEST_PW}@127.0.0.1:1/results"
    res = CliRunner().invoke(app, ["db", "upgrade", "--config", str(_config(tmp_path, url))])
    assert res.exit_code == 2
    assert "could not connect" in res.output and "fix:" in res.output
    assert "pw-should-not-print" not in res.output
    assert "Traceback" not in res.output
