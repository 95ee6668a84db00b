"""Training units and duplicates: what a scan returns is fixed by the files, not by how it keeps
them (memory, catalog table, write batches)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pipeline.ingest.catalog as catalog
from db.engine import results_engine
from db.read import read_catalog, read_quarantine
from pipeline import pseudonyms
from pipeline.ingest import units
from pipeline.ingest.scan import ingest
from pipeline.ingest.tally import TrainingImage
from pipeline.synthetic.writer import Phi, UIDs, write_dicom, write_not_dicom, write_truncated
from tests.pipeline.ingest.test_catalog import _cfg

KEY = bytes.fromhex("ab" * 32)


def _dx(src: Path, rel: str, pid: str, seed: int, modality: str = "DX") -> tuple:
    uids = UIDs()
    write_dicom(src / rel, modality=modality, phi=Phi(patient_id=pid), uids=uids, seed=seed)
    return rel, pid, uids, modality


def _cohort(src: Path) -> tuple[list[tuple], list[list[tuple]]]:
    """A mixed cohort in 5 folders (file order a < b < c < d < e).

    Returns:
        ``(planar, series)``: ``(relpath, patient id, UIDs, modality)`` of each CR/DX file that
        should be catalogued, in file order, and of each MR series' slices.
    """
    planar = [_dx(src, f"a/{i:02d}.dcm", f"P{i % 3}", i) for i in range(8)]
    series: list[list[tuple]] = [[], []]
    for j, (s, z) in enumerate([(1, 0), (0, 0), (1, 1), (0, 1), (0, 2), (1, 2)]):
        uids = UIDs(series=f"1.2.826.0.1.3680043.99.{s}", study="1.2.826.0.1.3680043.99.9")
        write_dicom(src / "b" / f"mr{j}.dcm", modality="MR", phi=Phi(patient_id=f"M{s}"),
                    uids=uids, slice_position=float(z), instance_number=z + 1,
                    seed=50 + j)  # fmt: skip
        series[s].append((f"b/mr{j}.dcm", f"M{s}", uids, "MR"))
    write_not_dicom(src / "c" / "junk.dcm")
    write_truncated(src / "c" / "cut.dcm", rows=32, columns=32)
    write_dicom(src / "c" / "ct.dcm", modality="CT")
    (src / "d").mkdir()
    shutil.copy(src / "a" / "01.dcm", src / "d" / "copy_a01.dcm")  # a later chunk
    shutil.copy(src / "a" / "06.dcm", src / "d" / "copy_a06.dcm")
    shutil.copy(src / "b" / "mr3.dcm", src / "d" / "copy_mr3.dcm")
    planar += [_dx(src, f"e/{i}.dcm", f"P{i}", 20 + i, modality="CR") for i in range(4)]
    return planar, series


def _expected(url: str, planar: list[tuple], series: list[list[tuple]]) -> list[TrainingImage]:
    """CR/DX instances in file order, then MR series in series-key order (keys recomputed
    from the UIDs; cache keys from the catalog)."""
    with results_engine(url) as eng:
        cache = {r["image_key"]: r["cache_key"] for r in read_catalog(eng)}
    out = []
    for _, pid, uids, modality in planar:
        ik = pseudonyms.image_key(KEY, uids.sop_instance)
        skey = pseudonyms.series_key(KEY, uids.series)
        out.append(TrainingImage(ik, pseudonyms.patient_key(KEY, pid), skey, cache[ik], modality))
    mr = []
    for members in series:
        rep = min(pseudonyms.image_key(KEY, u.sop_instance) for _, _, u, _ in members)
        skey = pseudonyms.series_key(KEY, members[0][2].series)
        mr.append(TrainingImage(rep, pseudonyms.patient_key(KEY, members[0][1]), skey,
                                cache[rep], "MR"))  # fmt: skip
    return out + sorted(mr, key=lambda t: t.series_key)


def _reasons(url: str) -> dict[str, str]:
    with results_engine(url) as eng:
        return {r["file_key"]: r["reason"] for r in read_quarantine(eng)}


@pytest.mark.parametrize("flush_rows", [2, 500])  # 2: first files are in the table, not memory
def test_units_and_duplicates_over_a_mixed_cohort_and_reruns(
    tmp_path, results_url, monkeypatch, flush_rows
):
    monkeypatch.setattr(catalog, "FLUSH_ROWS", flush_rows)
    src = tmp_path / "src"
    planar, series = _cohort(src)
    cfg = _cfg(src, results_url, tmp_path)
    first = ingest(cfg, key=KEY)
    expected = _expected(results_url, planar, series)
    assert list(first.images) == expected
    assert len(first.images) == len(expected) == 14
    assert first.images == tuple(first.images)  # a sequence equal to its tuple
    dups = {pseudonyms.file_key(KEY, f"d/{n}.dcm") for n in ("copy_a01", "copy_a06", "copy_mr3")}
    reasons = _reasons(results_url)
    assert {fk for fk, r in reasons.items() if r == "duplicate_instance"} == dups
    assert first.quarantined == {"duplicate_instance": 3, "not_dicom": 1, "truncated": 1,
                                 "unsupported_modality": 1}  # fmt: skip

    again = ingest(cfg, key=KEY)  # nothing new
    assert (again.catalogued, again.unchanged) == (0, 20)
    assert again.images == first.images and list(again.images) == list(first.images)
    assert _reasons(results_url) == reasons

    # a new copy earlier in file order loses to the file catalogued in the previous run
    shutil.copy(src / "e" / "2.dcm", src / "0_early_copy.dcm")
    third = ingest(cfg, key=KEY)
    assert (third.catalogued, third.quarantined["duplicate_instance"]) == (0, 4)
    assert _reasons(results_url)[pseudonyms.file_key(KEY, "0_early_copy.dcm")] == (
        "duplicate_instance"
    )
    assert third.images == first.images

    # a renamed file is not a duplicate of its old row; its unit moves to its new place
    (src / "f").mkdir()
    (src / "a" / "03.dcm").rename(src / "f" / "03.dcm")
    moved = ingest(cfg, key=KEY)
    assert (moved.catalogued, moved.forgotten) == (1, 1)
    order = planar[:3] + planar[4:] + [("f/03.dcm", *planar[3][1:])]
    assert list(moved.images) == _expected(results_url, order, series)


def test_units_are_only_counted_until_used(tmp_path, sqlite_url, monkeypatch):
    src = tmp_path / "src"
    planar, series = _cohort(src)
    cfg = _cfg(src, sqlite_url, tmp_path)
    reads: list[int] = []
    real = units.catalog_of_files
    monkeypatch.setattr(units, "catalog_of_files", lambda *a: reads.append(1) or real(*a))
    lazy = ingest(cfg, key=KEY, load_units=False)
    assert len(lazy.images) == 14 and not reads  # counted by the scan, nothing read
    assert list(lazy.images) == _expected(sqlite_url, planar, series) and len(reads) == 1
    assert lazy.images == ingest(cfg, key=KEY).images and len(reads) == 2
