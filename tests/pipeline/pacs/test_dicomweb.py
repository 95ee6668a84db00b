"""Ingest from a real Orthanc over DICOMweb: the same catalogue as the folder, incremental
pulls, clear errors before any work, one bad instance never stops a batch, no PHI anywhere."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from db.engine import open_results
from db.errors import UserError
from db.read import read_catalog, read_quarantine
from pipeline.config import config_from_dict
from pipeline.ingest import pull as pull_module
from pipeline.ingest.scan import ingest
from pipeline.pacs.dicomweb import DicomWebSource
from pipeline.pacs.source import RemoteInstance
from pipeline.redact import PhiLogFilter
from tests.pipeline.pacs.conftest import CALLING_AET, PASSWORD, Orthanc, Uploaded, free_port

KEY = bytes.fromhex("5a" * 32)


def _cfg(source: str, tmp_path: Path, db: str = "results.db", **dicom):
    return config_from_dict(
        {
            "dicom": {"source": source, "workers": 1, "image_size": 16,
                      "cache_dir": str(tmp_path / "cache"), **dicom},
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": f"sqlite:///{tmp_path / db}"},
        }
    )  # fmt: skip


def _tables(cfg) -> tuple[list[dict], list[dict]]:
    eng = open_results(cfg.results.url)
    try:
        return read_catalog(eng), read_quarantine(eng)
    finally:
        eng.dispose()


def _without_file_key(rows: list[dict]) -> list[dict]:
    """Catalog rows without what names the file or the time (a remote file key is its image key)."""
    drop = {"file_key", "id"}
    rows = [{k: v for k, v in r.items() if k not in drop and not k.endswith("_at")} for r in rows]
    return sorted(rows, key=lambda r: r["image_key"])


def _phi(folder: Path) -> set[str]:
    """The identifying values of the uploaded files (what must never be written anywhere)."""
    out: set[str] = set()
    for f in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(f, force=True, stop_before_pixels=True)
        for name in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber",
                     "InstitutionName", "SOPInstanceUID", "StudyInstanceUID",
                     "SeriesInstanceUID"):  # fmt: skip
            v = str(ds.get(name, "") or "").strip()
            if len(v) >= 4:
                out.add(v)
    return out


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts WADO-RS retrieves (the real ones still run)."""
    calls: Counter = Counter()
    real = DicomWebSource.retrieve

    def retrieve(self, inst):
        calls["retrieve"] += 1
        return real(self, inst)

    monkeypatch.setattr(DicomWebSource, "retrieve", retrieve)
    return calls


def test_pull_gives_the_folder_catalogue_without_phi_then_downloads_nothing(
    orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch, caplog, counted
):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    spool_root = tmp_path / "tmp"
    spool_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_root))
    caplog.handler.addFilter(PhiLogFilter())  # as the CLI's handlers (flows.console)
    caplog.set_level(logging.DEBUG)
    remote = _cfg(orthanc.dicomweb_source(), tmp_path, "remote.db")
    first = ingest(remote, key=KEY)
    assert first.found == uploaded.stored
    assert counted["retrieve"] == uploaded.stored
    assert list(spool_root.iterdir()) == []  # every spool folder was removed

    local = _cfg(str(uploaded.folder), tmp_path / "local", "local.db")
    from_folder = ingest(local, key=KEY)
    (r_cat, r_q), (f_cat, f_q) = _tables(remote), _tables(local)
    assert len(r_cat) == from_folder.catalogued > 0
    for a, b in zip(_without_file_key(r_cat), _without_file_key(f_cat), strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}  # hashes and arrays too
    assert Counter(q["reason"] for q in r_q) == Counter(q["reason"] for q in f_q)
    assert {"no_pixel_data", "unsupported_modality"} <= {q["reason"] for q in r_q}
    assert sorted(i.cache_key for i in first.images) == sorted(
        i.cache_key for i in from_folder.images
    )

    phi = _phi(uploaded.folder)
    dump = "\n".join(sqlite3.connect(tmp_path / "remote.db").iterdump())
    logs = caplog.text
    assert phi and not [v for v in phi if v in dump or v in logs]

    counted.clear()
    again = ingest(remote, key=KEY)
    assert counted["retrieve"] == 0  # nothing new: nothing downloaded
    assert again.unchanged == again.found == first.found and again.catalogued == 0
    assert set(again.images) == set(first.images) and again.images == first.images


def test_an_instance_the_pacs_does_not_deliver_is_quarantined_and_the_batch_goes_on(
    orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    real = DicomWebSource.search
    ghost = RemoteInstance("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                           "1.2.826.0.1.3680043.8.498.3", "DX")  # fmt: skip
    monkeypatch.setattr(DicomWebSource, "search", lambda self: sorted(real(self) + [ghost]))
    cfg = _cfg(orthanc.dicomweb_source(), tmp_path)
    res = ingest(cfg, key=KEY)
    assert res.quarantined.get("retrieve_error") == 1  # WADO-RS answered 404 for it
    assert res.catalogued + res.n_quarantined == uploaded.stored + 1
    detail = [q["detail"] for q in _tables(cfg)[1] if q["reason"] == "retrieve_error"]
    assert detail == ["WADO-RS retrieve failed (HTTP 404)"]
    again = ingest(cfg, key=KEY)  # not a settled verdict: tried again, everything else current
    assert again.quarantined == {"retrieve_error": 1} and again.unchanged == uploaded.stored


def test_a_wrong_password_fails_before_any_work(orthanc: Orthanc, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PACS_PASSWORD", "not-the-password")
    cfg = _cfg(orthanc.dicomweb_source(), tmp_path)
    with pytest.raises(UserError, match="refused the credentials \\(HTTP 401\\)") as err:
        ingest(cfg, key=KEY)
    assert "not-the-password" not in str(err.value) and "${PACS_PASSWORD}" in str(err.value)
    assert not (tmp_path / "results.db").exists()  # nothing opened, nothing written


def test_an_unreachable_or_wrong_service_fails_before_any_work(
    orthanc: Orthanc, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    nobody = f"http://cmcl:${{PACS_PASSWORD}}@127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(UserError, match="cannot be reached") as err:
        ingest(_cfg(nobody, tmp_path), key=KEY)
    assert err.value.transient and "dicom.source" in err.value.fix
    wrong_path = orthanc.dicomweb_source().replace("/dicom-web", "/no-such-service")
    with pytest.raises(UserError, match="HTTP 404"):
        ingest(_cfg(wrong_path, tmp_path), key=KEY)
    assert not (tmp_path / "results.db").exists()


def test_an_unset_password_variable_is_a_config_error(orthanc: Orthanc, tmp_path, monkeypatch):
    monkeypatch.delenv("PACS_PASSWORD", raising=False)
    with pytest.raises(UserError, match=r"\$\{PACS_PASSWORD\}"):
        ingest(_cfg(orthanc.dicomweb_source(), tmp_path), key=KEY)


def test_an_interrupted_pull_resumes_without_downloading_again(
    orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    spool_root = tmp_path / "tmp"
    spool_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_root))
    monkeypatch.setattr(pull_module, "BATCH", 4)
    real = DicomWebSource.retrieve
    calls: Counter = Counter()

    def dies_on_the_tenth(self, inst):
        calls["retrieve"] += 1
        if calls["retrieve"] == 10:
            raise KeyboardInterrupt  # the operator stops the pull half-way
        return real(self, inst)

    monkeypatch.setattr(DicomWebSource, "retrieve", dies_on_the_tenth)
    cfg = _cfg(orthanc.dicomweb_source(), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        ingest(cfg, key=KEY)
    assert list(spool_root.iterdir()) == []  # the spool went with the interruption
    cat, quar = _tables(cfg)
    kept = len(cat) + len(quar)
    assert 4 <= kept < uploaded.stored  # the finished batches were written

    calls.clear()
    calls["retrieve"] = -(10**6)  # do not interrupt again
    res = ingest(cfg, key=KEY)
    downloaded = calls["retrieve"] + 10**6
    assert downloaded == uploaded.stored - kept  # only what the catalog did not hold
    assert res.catalogued + res.n_quarantined + res.unchanged == uploaded.stored


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_dicom_query_filters_the_studies(
    protocol: str, orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    if protocol == "dicomweb":
        cfg = _cfg(orthanc.dicomweb_source(), tmp_path, query={"ModalitiesInStudy": "MR"})
    else:
        cfg = _cfg(orthanc.dimse_source, tmp_path, query={"ModalitiesInStudy": "MR"},
                   calling_aet=CALLING_AET)  # fmt: skip
    res = ingest(cfg, key=KEY)
    assert res.found == uploaded.mr_slices and res.catalogued == uploaded.mr_slices
    assert [i.modality for i in res.images] == ["MR"]  # one series, one training unit
