"""Ingest's per-file work on the compute engine: a 2-worker Dask LocalCluster writes the same
catalogue as the local worker processes; the key never travels, and a worker with another key
fails instead of writing other pseudonyms."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import open_results
from db.read import read_catalog, read_quarantine
from flows.ingest_engine import EnginePool, decode_task, ingest_pool
from pipeline.config import ComputeConfig, config_from_dict
from pipeline.dicom.validate import InspectSettings
from pipeline.dicom.worker import Task, WorkerState
from pipeline.imaging.preprocess import PreprocessSpec
from pipeline.ingest.scan import ingest
from pipeline.synthetic.cohort import make_synthetic_cohort
from tests.flows.conftest import TEST_KEY

KEY = bytes.fromhex(TEST_KEY)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Radiographs (MONOCHROME1 and another size among them), an MR series, broken files."""
    out = tmp_path_factory.mktemp("engine") / "cohort"
    make_synthetic_cohort(out, n_patients=16, image_size_dicom=16, seed=2, workers=1, n_broken=4,
                          mr_patients=1, mr_slices=4)  # fmt: skip
    return out / "dicom"


def _cfg(source: Path, tmp: Path, engine: str):
    return config_from_dict(
        {
            "dicom": {"source": str(source), "workers": 2, "image_size": 16,
                      "cache_dir": str(tmp / "cache")},
            "clinical": {"url": "sqlite:///x.db", "query": "SELECT 1", "id_column": "id"},
            "results": {"url": f"sqlite:///{tmp / 'results.db'}"},
            "compute": {"engine": engine, "workers": 2},
        }
    )  # fmt: skip


def _tables(url: str) -> tuple[list[dict], list[dict]]:
    eng = open_results(url)
    try:
        drop = lambda r: {k: v for k, v in r.items() if k != "id" and not k.endswith("_at")}  # noqa: E731
        return (sorted(map(drop, read_catalog(eng)), key=lambda r: r["file_key"]),
                sorted(map(drop, read_quarantine(eng)), key=lambda r: r["file_key"]))  # fmt: skip
    finally:
        eng.dispose()


@pytest.mark.slow
def test_dask_and_local_engines_write_the_same_catalogue(
    cohort: Path, tmp_path: Path, prefect_harness, monkeypatch
):
    monkeypatch.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)  # the LocalCluster's workers inherit it
    local_cfg = _cfg(cohort, tmp_path / "local", "local")
    dask_cfg = _cfg(cohort, tmp_path / "dask", "dask")
    assert ingest_pool(local_cfg.compute) is None  # local: dicom.workers processes
    local = ingest(local_cfg, key=KEY)
    dask = ingest(dask_cfg, key=KEY, pool=ingest_pool(dask_cfg.compute))
    assert local.catalogued == dask.catalogued > 0 and local.quarantined == dask.quarantined
    assert "MR" in {i.modality for i in dask.images} and dask.n_quarantined >= 3
    assert dask.images == local.images  # same units, same order, same cached arrays
    assert _tables(local_cfg.results.url) == _tables(dask_cfg.results.url)
    with EnginePool(dask_cfg.compute) as pool:  # started once, kept for both ingests
        again = ingest(dask_cfg, key=KEY, pool=pool)
        assert again.catalogued == 0 and again.unchanged + again.n_quarantined == again.found
        runner = pool._runner
        assert runner is not None and ingest(dask_cfg, key=KEY, pool=pool).found == again.found
        assert pool._runner is runner  # an ingest does not stop an entered pool's engine
    assert pool._runner is None


def test_a_worker_with_another_key_fails(cohort: Path, tmp_path: Path, prefect_harness,
                                         monkeypatch):  # fmt: skip
    monkeypatch.setenv("CMCL_PSEUDONYM_KEY", "77" * 32)  # not the key the scan was given
    cfg = _cfg(cohort, tmp_path, "local")
    with pytest.raises(Exception, match="another CMCL_PSEUDONYM_KEY"):
        ingest(cfg, key=KEY, pool=EnginePool(ComputeConfig(engine="local", workers=1)))


def test_task_inputs_carry_no_key_and_no_path(cohort: Path):
    path = str(next(cohort.rglob("*.dcm")))
    t = Task(path, "f" * 64)
    assert path not in repr(t)
    pool = EnginePool(ComputeConfig(engine="local", workers=1))
    state = WorkerState(InspectSettings(KEY), PreprocessSpec(16), cohort)
    executor = pool.start(state)
    try:
        assert executor.common["state"].settings.key == b""
        assert KEY.hex() not in repr(executor.common) and KEY not in repr(executor.common).encode()
    finally:
        executor.shutdown()
    assert decode_task.persist_result is False
