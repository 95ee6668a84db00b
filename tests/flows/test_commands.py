"""The `cmcl` commands as a user meets them: summaries, messages, exit codes, help screens."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest
from prefect.states import Failed
from rich.console import Console
from typer.testing import CliRunner

from db.engine import open_results, results_engine
from db.errors import DatabaseUnavailable, UserError
from db.read import quarantine_counts, read_catalog
from db.write import start_run
from flows.cli import app
from flows.commands import _table
from flows.console import UserErrorFilter
from flows.train import retry_if_transient
from pipeline import pseudonyms
from pipeline.errors import ConfigError
from pipeline.synthetic.writer import write_dicom, write_not_dicom

KEY = bytes.fromhex("ef" * 32)


def _write_config(tmp_path: Path, source: Path, url: str, clinical: str | None = None) -> Path:
    clinical = clinical or f"sqlite:///{tmp_path / 'clinic.db'}"
    p = tmp_path / "cmcl.yaml"
    p.write_text(
        f"dicom:\n  source: {source}\n  workers: 1\n  image_size: 16\n"
        f"  cache_dir: {tmp_path / 'cache'}\n"
        f"clinical:\n  url: {clinical}\n  query: SELECT 1\n  id_column: mrn\n"
        f"results:\n  url: {url}\n"
    )
    return p


def _row(output: str, label: str) -> list[str]:
    """The cells of the table row that starts with ``label``."""
    line = next(x for x in output.splitlines() if label in x)
    return [c.strip() for c in re.split(r"[│|]", line) if c.strip()]


def test_cli_ingest_summary_and_exit_codes(tmp_path, sqlite_url, monkeypatch):
    src = tmp_path / "src"
    write_dicom(src / "ok.dcm")
    write_not_dicom(src / "junk.dcm")
    runner = CliRunner()
    cfg = _write_config(tmp_path, src, sqlite_url)

    monkeypatch.delenv(pseudonyms.KEY_ENV, raising=False)
    res = runner.invoke(app, ["ingest", "--config", str(cfg)])
    assert res.exit_code == 2 and pseudonyms.KEY_ENV in res.output and "token_hex" in res.output

    monkeypatch.setenv(pseudonyms.KEY_ENV, KEY.hex())
    res = runner.invoke(app, ["ingest", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "catalogued" in res.output and "quarantined: not_dicom" in res.output
    # the "in the database" column is filled for catalogued rows too
    assert _row(res.output, "catalogued (new or changed)")[1:] == ["1", "1"]
    assert _row(res.output, "quarantined: not_dicom")[1:] == ["1", "1"]
    eng = open_results(sqlite_url)
    assert quarantine_counts(eng) == {"not_dicom": 1} and len(read_catalog(eng)) == 1
    eng.dispose()
    res = runner.invoke(app, ["ingest", "--config", str(cfg)])  # nothing new: still counted
    assert _row(res.output, "catalogued (new or changed)")[1:] == ["0", "1"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text() + "unknown_key: 1\n")
    res = runner.invoke(app, ["ingest", "--config", str(bad)])
    assert res.exit_code == 2 and "unknown_key" in res.output

    down = _write_config(tmp_path, src, "postgresql://nobody@127.0.0.1:1/none")
    res = runner.invoke(app, ["ingest", "--config", str(down)])
    assert res.exit_code == 2 and "error:" in res.output


def test_run_with_a_missing_clinical_database_fails_before_ingest(tmp_path, sqlite_url, key_env):
    src = tmp_path / "src"
    write_dicom(src / "ok.dcm")
    missing = tmp_path / "no-such-clinic.db"
    cfg = _write_config(tmp_path, src, sqlite_url, clinical=f"sqlite:///{missing}")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "error: the clinical SQLite database" in res.output and "does not exist" in res.output
    assert "Traceback" not in res.output
    with results_engine(sqlite_url) as eng:
        assert read_catalog(eng) == []  # nothing was ingested
    assert not missing.exists()


def test_edges_for_a_missing_run_says_so_and_how_to_list_runs(tmp_path, sqlite_url):
    cfg = _write_config(tmp_path, tmp_path, sqlite_url)
    runner = CliRunner()
    res = runner.invoke(app, ["edges", "--config", str(cfg), "--run", "99"])
    assert res.exit_code == 2
    assert "run 99 does not exist" in res.output and "holds no run yet" in res.output
    assert "cmcl runs --config" in res.output and "cmcl run --config" not in res.output
    with results_engine(sqlite_url) as eng:
        start_run(eng, config={}, code_version="test")
    res = runner.invoke(app, ["edges", "--config", str(cfg), "--run", "99"])
    assert res.exit_code == 2 and "newest run ids are [1]" in res.output
    res = runner.invoke(app, ["runs", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert _row(res.output, "running")[:2] == ["1", "running"]


def test_help_screens_show_flags_as_flags():
    runner = CliRunner()
    commands = ["demo", "synthetic", "ingest", "run", "edges", "runs", "serve", "score"]
    for args in [[], *([c] for c in commands), ["db", "upgrade"]]:
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)
        assert "<bool>" not in res.output, args
        assert "--help" in res.output
    res = runner.invoke(app, ["synthetic", "--help"])
    for default in ("default: cmcl-synthetic", "default: 500", "default: 64"):
        assert default in res.output


def test_table_titles_do_not_wrap():
    title = "run 12 (succeeded): 14 edges, cause -> effect, in a long descriptive title"
    table = _table(title, "a", "b")
    table.add_row("x", "y")
    console = Console(width=120, record=True)
    console.print(table)
    assert title in console.export_text()


def test_user_error_tracebacks_are_dropped_but_bugs_keep_theirs():
    flt = UserErrorFilter()
    for err, kept in ((ConfigError("bad key", "fix it"), False), (RuntimeError("bug"), True)):
        try:
            raise err
        except Exception:  # noqa: BLE001
            info = sys.exc_info()
        record = logging.LogRecord("prefect.task_runs", logging.ERROR, "", 1, "failed", (), info)
        assert flt.filter(record)
        assert (record.exc_info is not None) is kept


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (DatabaseUnavailable("connection refused", transient=True), True),
        (DatabaseUnavailable('database "clinic" does not exist'), False),
        (ConfigError("bad config"), False),
        (UserError("bad data"), False),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (ValueError("a bug"), False),
    ],
)
def test_tasks_retry_only_what_can_succeed_on_a_retry(exc, retried):
    assert retry_if_transient(None, None, Failed(data=exc)) is retried
