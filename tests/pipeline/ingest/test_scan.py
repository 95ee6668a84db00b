"""Ingestion end to end: every file lands in one table, no PHI anywhere, re-runs are cheap."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa

from db.engine import open_results
from db.read import read_catalog, read_quarantine
from pipeline import pseudonyms
from pipeline.config import cache_dir_for, config_from_dict
from pipeline.imaging.cache import PreprocessCache
from pipeline.ingest.scan import ingest
from pipeline.redact import PhiLogFilter
from pipeline.synthetic.writer import (
    Phi,
    UIDs,
    write_dicom,
    write_no_pixels,
    write_not_dicom,
    write_truncated,
)

KEY = bytes.fromhex("ef" * 32)
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _cfg(source: Path, url: str, tmp_path: Path, **dicom):
    return config_from_dict(
        {
            "dicom": {"source": str(source), "workers": 1, "image_size": 16,
                      "cache_dir": str(tmp_path / "cache"), **dicom},
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": url},
        }
    )  # fmt: skip


def _table_counts(url: str) -> tuple[int, int]:
    eng = open_results(url)
    try:
        return len(read_catalog(eng)), len(read_quarantine(eng))
    finally:
        eng.dispose()


def _messy_folder(root: Path) -> dict[str, str]:
    """Two good DX files, one MONOCHROME1 CR, and one file per bad kind; returns name->reason."""
    write_dicom(root / "a" / "good1.dcm", phi=Phi(patient_id="P1"), seed=1)
    write_dicom(root / "a" / "good2.dcm", phi=Phi(patient_id="P2"), seed=2, rows=40)
    write_dicom(root / "b" / "mono1.dcm", modality="CR", photometric="MONOCHROME1")
    shutil.copy(root / "a" / "good1.dcm", root / "z_copy_of_good1.dcm")
    write_truncated(root / "b" / "cut.dcm", rows=64, columns=64)
    write_not_dicom(root / "b" / "readme.dcm")
    write_no_pixels(root / "b" / "nopix.dcm")
    write_dicom(root / "c" / "ct.dcm", modality="CT")
    (root / ".hidden").mkdir()
    write_not_dicom(root / ".hidden" / "skipped.txt")
    return {
        "z_copy_of_good1.dcm": "duplicate_instance",
        "b/cut.dcm": "truncated",
        "b/readme.dcm": "not_dicom",
        "b/nopix.dcm": "no_pixel_data",
        "c/ct.dcm": "unsupported_modality",
    }


def test_messy_folder_reasons_and_idempotent_rerun(tmp_path, results_url):
    src = tmp_path / "src"
    expected = _messy_folder(src)
    cfg = _cfg(src, results_url, tmp_path)
    seen: list[tuple[int, int]] = []
    first = ingest(cfg, key=KEY, progress=lambda d, t: seen.append((d, t)))

    assert first.found == 8  # the hidden folder is not scanned
    assert first.catalogued == 3 and first.unchanged == 0
    assert first.quarantined == {r: 1 for r in expected.values()}
    assert seen[-1] == (8, 8)
    eng = open_results(results_url)
    try:
        by_file = {q["file_key"]: q["reason"] for q in read_quarantine(eng)}
        assert by_file == {pseudonyms.file_key(KEY, n): r for n, r in expected.items()}
        catalog = read_catalog(eng)
    finally:
        eng.dispose()
    assert {c["photometric"] for c in catalog} == {"MONOCHROME1", "MONOCHROME2"}
    cache = PreprocessCache(cache_dir_for(cfg))
    for img in first.images:
        arr = cache.get(img.cache_key)
        assert arr is not None and arr.shape == (1, 16, 16) and arr.dtype == np.float32

    second = ingest(cfg, key=KEY)
    assert second.catalogued == 0
    # duplicates and modality rejections are re-judged each scan; the rest are unchanged
    assert second.quarantined == {"duplicate_instance": 1, "unsupported_modality": 1}
    assert second.unchanged == 6
    assert second.images == first.images
    assert _table_counts(results_url) == (3, 5)


def test_every_file_of_pydicoms_corpus_is_catalogued_or_quarantined(tmp_path, sqlite_url):
    files = [p for p in CORPUS.rglob("*") if p.is_file() and not p.name.startswith(".")]
    result = ingest(_cfg(CORPUS, sqlite_url, tmp_path), key=KEY)
    assert result.found == len(files) > 100
    assert result.catalogued + result.unchanged + result.n_quarantined == result.found
    n_catalog, n_quarantine = _table_counts(sqlite_url)
    assert n_catalog + n_quarantine == result.found
    assert result.quarantined["duplicate_instance"] >= 1  # the MR_small variants share a UID
    assert {"not_dicom", "truncated", "no_pixel_data", "unsupported_modality"} <= set(
        result.quarantined
    )


def test_parallel_mr_series_changes_and_spec_changes(tmp_path, sqlite_url):
    src = tmp_path / "src"
    series = UIDs()
    for z in (3, 0, 2, 1):  # file order differs from slice order
        write_dicom(
            src / "mr" / f"slice{z}.dcm", modality="MR", slice_position=float(z),
            instance_number=z + 1, uids=UIDs(series=series.series, study=series.study), seed=z,
        )  # fmt: skip
    for i in range(6):
        write_dicom(src / "cr" / f"{i}.dcm", modality="CR", phi=Phi(patient_id=f"P{i}"), seed=i)
    cfg = _cfg(src, sqlite_url, tmp_path, workers=2)
    first = ingest(cfg, key=KEY)
    assert first.found == 10 and first.catalogued == 10 and first.n_quarantined == 0
    mr = [im for im in first.images if im.modality == "MR"]
    assert len(mr) == 1 and len(first.images) == 7  # one unit per MR series
    eng = open_results(sqlite_url)
    rows = [r for r in read_catalog(eng) if r["modality"] == "MR"]
    eng.dispose()
    assert {r["cache_key"] for r in rows} == {mr[0].cache_key}
    assert {r["n_slices"] for r in rows} == {4}
    assert mr[0].image_key == min(r["image_key"] for r in rows)
    assert PreprocessCache(cache_dir_for(cfg)).get(mr[0].cache_key).shape == (1, 16, 16)

    # a changed file is re-catalogued (not a duplicate of its own old row)
    write_dicom(src / "cr" / "0.dcm", modality="CR", phi=Phi(patient_id="P0"), seed=99)
    again = ingest(cfg, key=KEY)
    assert (again.catalogued, again.unchanged, again.n_quarantined) == (1, 9, 0)

    # a new preprocessing spec invalidates every cached array, and nothing else
    bigger = _cfg(src, sqlite_url, tmp_path, workers=2, image_size=24)
    resized = ingest(bigger, key=KEY)
    # CR files are re-processed; MR files are unchanged but their series array is rebuilt
    assert (resized.catalogued, resized.unchanged, resized.n_quarantined) == (6, 4, 0)
    cache = PreprocessCache(cache_dir_for(bigger))
    assert all(cache.get(im.cache_key).shape == (1, 24, 24) for im in resized.images)
    assert _table_counts(sqlite_url) == (10, 0)


def test_a_new_copy_of_a_catalogued_instance_is_a_duplicate(tmp_path, sqlite_url):
    src = tmp_path / "src"
    write_dicom(src / "b_original.dcm")
    cfg = _cfg(src, sqlite_url, tmp_path)
    assert ingest(cfg, key=KEY).catalogued == 1
    shutil.copy(src / "b_original.dcm", src / "a_copy.dcm")  # sorts before the original
    result = ingest(cfg, key=KEY)
    assert result.quarantined == {"duplicate_instance": 1} and result.unchanged == 1
    eng = open_results(sqlite_url)
    assert read_catalog(eng)[0]["file_key"] == pseudonyms.file_key(KEY, "b_original.dcm")
    eng.dispose()


CANARY = Phi(
    patient_id="CANARYMRN778899",
    patient_name="ZQCANARY^XAVIERINE",
    birth_date="19230405",
    accession_number="CANARYACC5566",
    institution="Canary Wharf Infirmary",
    referring_physician="DRCANARY^OSWALDO",
)
CANARY_UIDS = UIDs(
    sop_instance="1.2.826.0.1.3680043.99.7788.1",
    series="1.2.826.0.1.3680043.99.7788.2",
    study="1.2.826.0.1.3680043.99.7788.3",
)
LEAKS = (
    "CANARYMRN778899", "ZQCANARY", "XAVIERINE", "19230405", "CANARYACC5566", "Canary Wharf",
    "DRCANARY", "OSWALDO", "3680043.99.7788",
)  # fmt: skip


def _dump_database(url: str) -> str:
    eng = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(eng)
        with eng.connect() as conn:
            return "\n".join(
                repr(tuple(row)) for t in meta.sorted_tables for row in conn.execute(t.select())
            )
    finally:
        eng.dispose()


def test_phi_canary(tmp_path, results_url, caplog, capfd):
    src = tmp_path / "src"
    folder = src / "ZQCANARY_XAVIERINE_CANARYMRN778899"
    write_dicom(folder / "ZQCANARY_chest.dcm", phi=CANARY, uids=CANARY_UIDS)
    write_dicom(folder / "dup_CANARYMRN778899.dcm", phi=CANARY, uids=CANARY_UIDS)
    write_truncated(folder / "cut_CANARYMRN778899.dcm", phi=CANARY, rows=64, columns=64)
    write_dicom(folder / "burn_CANARYACC5566.dcm", phi=CANARY, burned_in="YES")
    write_dicom(folder / "ct_CANARYACC5566.dcm", phi=CANARY, modality="CT")
    write_dicom(folder / "nopid.dcm", phi=Phi(patient_id=None, patient_name=CANARY.patient_name))
    cfg = _cfg(src, results_url, tmp_path, workers=2)
    caplog.handler.addFilter(PhiLogFilter())
    with caplog.at_level(logging.DEBUG):
        result = ingest(cfg, key=KEY)
        ingest(cfg, key=KEY)
    assert result.catalogued == 1 and result.n_quarantined == 5

    printed = "".join(capfd.readouterr())  # the worker processes' stderr included
    dump = _dump_database(results_url)
    assert pseudonyms.patient_key(KEY, CANARY.patient_id) in dump  # the dump is not empty
    cache_names = " ".join(p.name for p in (tmp_path / "cache").rglob("*"))
    for leak in LEAKS:
        assert leak.lower() not in dump.lower(), leak
        assert leak.lower() not in caplog.text.lower(), leak
        assert leak.lower() not in printed.lower(), leak
        assert leak.lower() not in cache_names.lower(), leak
        assert leak.lower() not in repr(result).lower(), leak

    # a failing scan's exception names no patient either
    bad_url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(Exception) as err:
        ingest(_cfg(src, bad_url, tmp_path), key=KEY)
    assert not any(leak.lower() in str(err.value).lower() for leak in LEAKS)


def test_an_mr_series_that_is_not_one_volume_is_quarantined_whole(tmp_path, sqlite_url):
    src = tmp_path / "src"
    s = UIDs()
    for z, rows in enumerate((32, 32, 48)):  # the last slice has another size
        uids = UIDs(series=s.series, study=s.study)
        write_dicom(src / f"s{z}.dcm", modality="MR", rows=rows, slice_position=z, uids=uids)
    write_dicom(src / "cr.dcm", modality="CR")
    result = ingest(_cfg(src, sqlite_url, tmp_path), key=KEY)
    assert result.quarantined == {"inconsistent_series": 3}
    assert result.catalogued == 1 and [im.modality for im in result.images] == ["CR"]
    assert _table_counts(sqlite_url) == (1, 3)
    again = ingest(_cfg(src, sqlite_url, tmp_path), key=KEY)
    assert (again.catalogued, again.unchanged, again.n_quarantined) == (0, 4, 0)


def test_a_scan_that_dies_keeps_what_it_had_processed(tmp_path, sqlite_url, monkeypatch):
    from pipeline.dicom import worker as ingest_worker

    src = tmp_path / "src"
    for i in range(5):
        write_dicom(src / f"{i}.dcm", phi=Phi(patient_id=f"P{i}"), seed=i)
    real = ingest_worker.process_chunk
    calls = {"n": 0}

    def dies_on_the_third_chunk(tasks):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(tasks)

    monkeypatch.setattr(ingest_worker, "process_chunk", dies_on_the_third_chunk)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(_cfg(src, sqlite_url, tmp_path), key=KEY)  # one file per chunk in-process
    assert _table_counts(sqlite_url) == (2, 0)
    monkeypatch.setattr(ingest_worker, "process_chunk", real)
    resumed = ingest(_cfg(src, sqlite_url, tmp_path), key=KEY)
    assert (resumed.catalogued, resumed.unchanged) == (3, 2)
