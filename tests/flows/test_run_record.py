"""The run-record context manager: running -> failed with a PHI-free message; crashed runs."""

from __future__ import annotations

import pytest

from db.engine import results_engine
from db.read import get_run, list_runs
from db.write import start_run
from flows.run_record import STALE_ENV, recorded_run
from pipeline.config import config_from_dict
from pipeline.errors import DataError


def _cfg(tmp_path, url):
    return config_from_dict(
        {
            "dicom": {"source": str(tmp_path), "cache_dir": str(tmp_path / "cache")},
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": url, "report_dir": str(tmp_path / "reports")},
        }
    )


def test_a_failing_block_marks_the_run_failed_and_cleans_up(tmp_path, sqlite_url):
    cfg = _cfg(tmp_path, sqlite_url)
    with pytest.raises(DataError), recorded_run(cfg, device="cpu") as run:
        assert run.work.is_dir() and run.dir == tmp_path / "reports" / f"run-{run.id}"
        with results_engine(sqlite_url) as eng:
            assert get_run(eng, run.id)["status"] == "running"
        run.fingerprint = "ab" * 32
        raise DataError("no image joins a clinical record", "check clinical.id_column")
    assert not run.work.exists()
    with results_engine(sqlite_url) as eng:
        row = get_run(eng, run.id)
    assert row["status"] == "failed" and row["data_fingerprint"] == "ab" * 32
    assert row["error"] == "no image joins a clinical record\n  fix: check clinical.id_column"
    assert row["device"] == "cpu" and row["config"]["results"]["url"] == sqlite_url


def test_a_bug_is_recorded_by_its_type_only(tmp_path, sqlite_url):
    with pytest.raises(RuntimeError), recorded_run(_cfg(tmp_path, sqlite_url), device="cpu"):
        raise RuntimeError("value MRN-0042 broke")  # a bug's message may quote anything
    with results_engine(sqlite_url) as eng:
        (row,) = list_runs(eng)
    assert row["error"] == "RuntimeError (see the flow run's log)"


def test_a_silent_running_run_is_marked_crashed_at_the_next_start(
    tmp_path, sqlite_url, monkeypatch
):
    with results_engine(sqlite_url) as eng:
        dead = start_run(eng, config={}, code_version="test")
    monkeypatch.setenv(STALE_ENV, "0")
    with recorded_run(_cfg(tmp_path, sqlite_url), device="cpu") as run:
        with results_engine(sqlite_url) as eng:
            assert get_run(eng, dead)["status"] == "crashed"
            assert get_run(eng, run.id)["status"] == "running"
