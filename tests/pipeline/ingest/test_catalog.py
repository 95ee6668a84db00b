"""The catalog follows the source: vanished files are forgotten, but never on a bad listing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pipeline.ingest.scan as scan
from db.engine import results_engine
from db.read import read_catalog, read_quarantine
from pipeline import pseudonyms
from pipeline.config import config_from_dict
from pipeline.dicom.discover import Discovery, discover
from pipeline.errors import ConfigError, DataError
from pipeline.ingest.scan import ingest
from pipeline.synthetic.writer import Phi, write_dicom, write_not_dicom

KEY = bytes.fromhex("cd" * 32)


def _cfg(source: Path, url: str, tmp_path: Path):
    return config_from_dict(
        {
            "dicom": {"source": str(source), "workers": 1, "image_size": 16,
                      "cache_dir": str(tmp_path / "cache")},
            "clinical": {"url": "sqlite:///unused.db", "query": "SELECT 1", "id_column": "mrn"},
            "results": {"url": url},
        }
    )  # fmt: skip


def _files(url: str) -> tuple[set[str], set[str]]:
    """file_keys in the catalog and in the quarantine."""
    with results_engine(url) as eng:
        return (
            {r["file_key"] for r in read_catalog(eng)},
            {r["file_key"] for r in read_quarantine(eng)},
        )


def _folder(src: Path) -> None:
    for i in range(3):
        write_dicom(src / "a" / f"{i}.dcm", phi=Phi(patient_id=f"P{i}"), seed=i)
    write_not_dicom(src / "b" / "junk.dcm")
    write_not_dicom(src / "b" / "more_junk.dcm")


def test_vanished_files_leave_the_catalog_and_the_training_set(tmp_path, results_url):
    src = tmp_path / "src"
    _folder(src)
    cfg = _cfg(src, results_url, tmp_path)
    first = ingest(cfg, key=KEY)
    assert (first.found, first.catalogued, first.n_quarantined, first.forgotten) == (5, 3, 2, 0)
    gone_image = pseudonyms.file_key(KEY, "a/1.dcm")
    gone_bad = pseudonyms.file_key(KEY, "b/junk.dcm")
    assert gone_image in _files(results_url)[0] and gone_bad in _files(results_url)[1]

    (src / "a" / "1.dcm").unlink()
    (src / "b" / "junk.dcm").unlink()
    second = ingest(cfg, key=KEY)
    assert (second.found, second.unchanged, second.forgotten) == (3, 3, 2)
    catalog, quarantine = _files(results_url)
    assert gone_image not in catalog and len(catalog) == 2
    assert gone_bad not in quarantine and len(quarantine) == 1
    assert len(second.images) == 2  # what a training run gets: only files present now
    assert {im.image_key for im in second.images} < {im.image_key for im in first.images}

    write_dicom(src / "a" / "1.dcm", phi=Phi(patient_id="P1"), seed=1)  # it comes back
    third = ingest(cfg, key=KEY)
    assert (third.catalogued, third.forgotten, len(third.images)) == (1, 0, 3)
    assert gone_image in _files(results_url)[0]


def test_an_empty_source_never_wipes_the_catalog(tmp_path, sqlite_url):
    src = tmp_path / "src"
    _folder(src)
    cfg = _cfg(src, sqlite_url, tmp_path)
    ingest(cfg, key=KEY)
    before = _files(sqlite_url)
    shutil.rmtree(src)
    src.mkdir()  # an unmounted share: the mount point is there, the files are not
    with pytest.raises(DataError, match="holds no file.*5 files.*mounted"):
        ingest(cfg, key=KEY)
    assert _files(sqlite_url) == before
    src.rmdir()  # no folder at all
    with pytest.raises(ConfigError, match="not an existing folder"):
        ingest(cfg, key=KEY)
    assert _files(sqlite_url) == before


def test_nothing_is_forgotten_when_a_folder_could_not_be_listed(tmp_path, sqlite_url, monkeypatch):
    src = tmp_path / "src"
    _folder(src)
    cfg = _cfg(src, sqlite_url, tmp_path)
    ingest(cfg, key=KEY)
    before = _files(sqlite_url)

    def without_folder_b(source: Path) -> Discovery:
        found = discover(source)
        kept = [(p, rel) for p, rel in found.files if not rel.startswith("b/")]
        return Discovery(kept, unlisted=1)  # as if folder b raised PermissionError

    monkeypatch.setattr(scan, "discover", without_folder_b)
    result = ingest(cfg, key=KEY)
    assert (result.found, result.forgotten) == (3, 0)
    assert _files(sqlite_url) == before
