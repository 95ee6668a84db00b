"""Fixtures of the flow tests: one tiny synthetic cohort, a Prefect test harness, a key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
import yaml

TEST_KEY = "5e" * 32
TINY_MODEL = {
    "latent_dim": 3,
    "epochs": 2,
    "min_epochs": 2,
    "batch_size": 16,
    "dag_warmup_epochs": 1,
    "base_channels": 8,
    "max_channels": 16,
}
TINY_STABILITY = {"resamples": 4, "level": "dag"}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 48-patient synthetic cohort at 16x16 (graph 3/10 shrunk: d=2, m=3), written once."""
    from pipeline.synthetic.cohort import make_synthetic_cohort

    out = tmp_path_factory.mktemp("tiny") / "cohort"
    make_synthetic_cohort(
        out,
        n_patients=48,
        d=2,
        m=3,
        n_edges=2,
        setting=None,
        image_size_dicom=16,
        seed=1,
        workers=1,
        n_broken=2,
    )
    return out


@pytest.fixture
def tiny_config(tiny_cohort, tmp_path) -> Path:
    """A config over the shared cohort with fresh results and reports in tmp_path."""
    data = yaml.safe_load((tiny_cohort / "config.yaml").read_text())
    data["results"] = {
        "url": f"sqlite:///{tmp_path / 'results.db'}",
        "report_dir": str(tmp_path / "reports"),
    }
    data["dicom"]["cache_dir"] = str(tmp_path / "cache")
    data["dicom"]["workers"] = 1
    data["model"] = dict(TINY_MODEL)
    data["stability"] = dict(TINY_STABILITY)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def key_env(monkeypatch) -> str:
    monkeypatch.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_harness(prefect_home):
    """One temporary Prefect API for the session, with PREFECT_HOME in a temporary folder."""
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(prefect_home)
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old


def phi_canaries(cohort: Path) -> set[str]:
    """Identifying values of the cohort: DICOM identity headers and clinical ids."""
    import sqlite3

    out: set[str] = set()
    for f in sorted((cohort / "dicom").rglob("*.dcm"))[:40]:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the broken files
            continue
        for tag in (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "AccessionNumber",
            "SOPInstanceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
        ):
            v = str(ds.get(tag, "") or "")
            if len(v) >= 6:
                out.add(v)
    con = sqlite3.connect(cohort / "clinical.db")
    out |= {r[0] for r in con.execute("SELECT mrn FROM clinical_records")}
    con.close()
    return out


def copy_tree_bytes(root: Path) -> bytes:
    """Every file under root, concatenated (for canary searches)."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


__all__ = ["TEST_KEY", "TINY_MODEL", "copy_tree_bytes", "phi_canaries", "shutil"]
