"""The synthetic DICOM cohort: it contains what truth.json says, reproducibly, with no real PHI."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_ROOT_UID

from cmcl_core.simulate import REALISM_PRESETS, Realism, simulate
from pipeline.clinical.join import join_cohort
from pipeline.clinical.source import load_clinical
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.pseudonyms import image_key, patient_key
from pipeline.synthetic.cohort import make_synthetic_cohort, realism_options
from pipeline.synthetic.files import true_latents
from pipeline.synthetic.writer import MAX_STORED

KEY = b"synthetic-test-key-0123456789ab"
PARAMS = dict(
    n_patients=60,
    seed=3,
    n_broken=4,
    mr_patients=1,
    mr_slices=6,
    missing_values=2,
    monochrome1_fraction=0.2,
    other_size_fraction=0.2,
    repeat_fraction=0.1,
    workers=1,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("cohort") / "c", **PARAMS)


@pytest.fixture(scope="module")
def truth(cohort):
    return json.loads(cohort.truth_path.read_text())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _decodes(path: Path) -> bool:
    try:
        ds = pydicom.dcmread(path)
        ds.pixel_array  # noqa: B018 - decoding is the check
    except (InvalidDicomError, AttributeError, ValueError, EOFError, OSError):
        return False
    return True


def test_files_match_truth(cohort, truth):
    exp = truth["expected"]
    files = _files(cohort.dicom_dir)
    assert len(files) == exp["files_total"]
    broken = {b["file"]: b["reason"] for b in truth["broken_files"]}
    assert len(broken) == 4 == exp["files_quarantined"]
    assert sorted(broken.values()) == sorted(
        ["truncated", "not_dicom", "unsupported_modality", "no_pixel_data"]
    )
    counts = {"MONOCHROME1": 0, "big": 0, "MR": 0, "decoded": 0}
    for path in files:
        rel = path.relative_to(cohort.out_dir).as_posix()
        ok = _decodes(path)
        if rel in broken:
            reason = broken[rel]
            if reason == "unsupported_modality":
                assert ok and pydicom.dcmread(path).Modality == "OT"
            else:
                assert not ok, f"{reason} file must not decode"
            continue
        assert ok, rel
        ds = pydicom.dcmread(path)
        counts["decoded"] += 1
        counts["MONOCHROME1"] += ds.PhotometricInterpretation == "MONOCHROME1"
        counts["big"] += ds.Rows == 128
        counts["MR"] += ds.Modality == "MR"
        assert ds.BitsStored == 12 and ds.Modality in ("CR", "DX", "MR")
        assert int(ds.pixel_array.max()) <= MAX_STORED
    assert counts["decoded"] == exp["files_catalogued"]
    assert counts["MONOCHROME1"] == exp["monochrome1_files"] > 0
    assert counts["big"] == exp["other_size_files"] > 0
    assert counts["MR"] == exp["mr_files"] == 6
    assert len(truth["monochrome1_files"]) == exp["monochrome1_files"]


def _display(ds: pydicom.Dataset) -> np.ndarray:
    """Stored pixels -> [0, 1] by the file's window, MONOCHROME1 inverted, 2x files averaged."""
    x = ds.pixel_array.astype(np.float64)  # [H, W]
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    y = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1.0 - y
    if y.shape[0] == 128:
        y = y.reshape(64, 2, 64, 2).mean(axis=(1, 3))  # [128, 128] -> [64, 64]
    return y


def test_every_radiograph_shows_its_simulated_image(cohort, truth):
    sim = simulate(
        truth["d"], truth["m"], truth["n_edges"], n=60, image_size=64, n_binary=1, seed=3
    )
    lat = np.load(cohort.out_dir / "truth_latents.npz")
    by_sop = {str(s): i for i, s in enumerate(lat["sop_instance_uid"])}
    broken = {b["file"] for b in truth["broken_files"]}
    checked = {"MONOCHROME1": 0, "MONOCHROME2": 0}
    for path in _files(cohort.dicom_dir / "batch_000"):
        if path.relative_to(cohort.out_dir).as_posix() in broken:
            continue
        ds = pydicom.dcmread(path)
        row = by_sop[str(ds.SOPInstanceUID)]
        sample = int(lat["sample"][row])
        np.testing.assert_array_equal(lat["z"][row], sim.z[sample])
        err = np.abs(_display(ds) - sim.images[sample, 0]).max()  # [64, 64]
        # exact up to 12-bit rounding; a follow-up image carries extra noise (sd 0.02)
        assert err <= (0.15 if lat["follow_up"][row] else 0.5 / MAX_STORED + 1e-6), err
        checked[ds.PhotometricInterpretation] += 1
    assert checked["MONOCHROME1"] > 0 and checked["MONOCHROME2"] > 0


def test_clinical_database_rows(cohort, truth):
    exp = truth["expected"]
    con = sqlite3.connect(cohort.clinical_db)
    rows = con.execute("SELECT * FROM clinical_records").fetchall()
    cols = [c[1] for c in con.execute("PRAGMA table_info(clinical_records)")]
    con.close()
    assert cols == ["mrn", *truth["u_names"]]
    assert len(rows) == exp["clinical_rows"] == 60 - 1
    assert sum(any(v is None for v in r) for r in rows) == exp["records_excluded_missing"] == 2
    covid = {r[1] for r in rows if r[1] is not None}
    assert covid == {"negative", "positive"}
    assert truth["binary_coding"]["covid"] == {"negative": 0, "positive": 1}
    assert all(re.fullmatch(r"SYN\d{8}", r[0]) for r in rows)


def test_config_and_join_reproduce_expected_counts(cohort, truth):
    """Catalogue the valid files by their headers, load the clinical source through the written
    config, join: every count truth.json promises comes out."""
    cfg = load_config(cohort.config_path)
    assert cfg.dicom.source == cohort.dicom_dir
    clinical = load_clinical(cfg.clinical, key=KEY)
    exp = truth["expected"]
    assert clinical.u_names == tuple(truth["u_names"])
    assert clinical.u_types == tuple(truth["u_types"])
    assert clinical.counts.records == exp["records_in"]
    assert clinical.counts.excluded_missing == exp["records_excluded_missing"]

    class Img:
        def __init__(self, ds: pydicom.Dataset, uid: str):
            self.image_key = image_key(KEY, uid)
            self.patient_key = patient_key(KEY, ds.PatientID)
            self.cache_key = self.image_key

    broken = {b["file"] for b in truth["broken_files"]}
    images, series_seen = [], set()
    for path in _files(cohort.dicom_dir):
        if path.relative_to(cohort.out_dir).as_posix() in broken:
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "MR":  # one training image per series, named by one of its slices
            if ds.SeriesInstanceUID in series_seen:
                continue
            series_seen.add(ds.SeriesInstanceUID)
        images.append(Img(ds, ds.SOPInstanceUID))
    joined = join_cohort(images, clinical)
    c = joined.counts
    for name in (
        "images_in",
        "images_without_record",
        "images_record_excluded",
        "records_in",
        "records_without_image",
        "records_excluded_missing",
        "patients",
        "images_joined",
    ):
        assert getattr(c, name) == exp[name], name
    assert exp["images_joined"] > exp["patients"]  # follow-up images exist
    z = true_latents(cohort.out_dir, key=KEY, image_keys=joined.image_keys)  # [n, m]
    assert z.shape == (len(joined), 6) and not np.isnan(z).any()
    assert np.isnan(
        true_latents(cohort.out_dir, key=b"another-key-000000", image_keys=joined.image_keys)
    ).all()


def test_truth_graph(cohort, truth):
    assert truth["setting"] == "4/10" and (truth["d"], truth["m"], truth["n_edges"]) == (4, 6, 4)
    B = np.asarray(truth["B_true"])
    names = truth["node_order"]
    edges = {(names[i], names[j]) for i, j in zip(*np.nonzero(B), strict=True)}
    assert edges == {(e["source"], e["target"]) for e in truth["edges"]}
    assert edges == set(cohort.true_edges) and len(edges) == 4
    for a, b in edges:  # bipartite: every edge joins a clinical variable and a latent
        assert (a in truth["u_names"]) != (b in truth["u_names"])


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _files(root)
        if p.name != "truth_latents.npz"  # zip timestamps; its arrays are compared below
    }


def test_deterministic_for_a_seed(cohort, tmp_path):
    again = make_synthetic_cohort(tmp_path / "again", **PARAMS)
    a, b = _digest(cohort.out_dir), _digest(again.out_dir)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k] and k not in ("config.yaml",)]
    assert differing == []  # config.yaml differs only in its absolute paths
    za = np.load(cohort.out_dir / "truth_latents.npz")["z"]
    np.testing.assert_array_equal(za, np.load(again.out_dir / "truth_latents.npz")["z"])
    other = make_synthetic_cohort(tmp_path / "other", **{**PARAMS, "seed": 4, "n_patients": 20})
    assert _digest(other.out_dir)["clinical.db"] != a["clinical.db"]


def test_only_synthetic_identifiers(cohort):
    pids = set()
    for path in _files(cohort.dicom_dir):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue
        assert re.fullmatch(r"SYNTHETIC\^PATIENT\^\d{4,}", str(ds.PatientName))
        assert re.fullmatch(r"SYN\d{8}", ds.PatientID)
        assert re.fullmatch(r"SYNACC\d+", ds.AccessionNumber)
        assert ds.InstitutionName == "CMCL Synthetic Hospital"
        assert str(ds.ReferringPhysicianName) == "SYNTHETIC^REFERRER"
        for elem in ds.iterall():
            if elem.VR == "PN":
                assert str(elem.value).startswith("SYNTHETIC^"), elem.keyword
        assert ds.SOPInstanceUID.startswith(PYDICOM_ROOT_UID)  # fresh, never an original UID
        pids.add(ds.PatientID)
    texts = [cohort.truth_path.read_text(), cohort.config_path.read_text()]
    paths = [p.relative_to(cohort.out_dir).as_posix() for p in _files(cohort.out_dir)]
    for pid in pids:
        assert not any(pid in t for t in texts)
        assert not any(pid in p for p in paths)
        assert not any(pid[3:] in p for p in paths)


def test_out_dir_rules(tmp_path, cohort):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's")
    with pytest.raises(ConfigError, match="not empty"):
        make_synthetic_cohort(foreign, n_patients=20, workers=1)
    assert (foreign / "notes.txt").exists()
    with pytest.raises(ConfigError, match="unknown graph setting"):
        make_synthetic_cohort(tmp_path / "x", setting="7/7", n_patients=20)
    with pytest.raises(ConfigError, match="too small"):
        make_synthetic_cohort(tmp_path / "y", n_patients=5)


def test_regenerates_its_own_folder_and_explicit_graph(tmp_path):
    out = tmp_path / "own"
    make_synthetic_cohort(out, n_patients=20, workers=1, n_broken=0)
    (out / "results.db").write_bytes(b"kept")
    info = make_synthetic_cohort(
        out,
        n_patients=20,
        workers=1,
        d=2,
        m=3,
        n_edges=2,
        n_binary=0,
        var_names=["a", "b"],
        n_broken=0,
    )
    assert (out / "results.db").read_bytes() == b"kept"
    assert info.u_names == ("a", "b") and info.u_types == ("continuous", "continuous")
    truth = json.loads(info.truth_path.read_text())
    assert truth["setting"] is None and (truth["d"], truth["m"], truth["n_edges"]) == (2, 3, 2)
    assert len(_files(info.dicom_dir)) == info.expected["files_total"]
    assert info.expected["files_quarantined"] == 0


@pytest.mark.slow
def test_ingest_and_join_report_what_truth_promises(tmp_path):
    """The real ingest on a generated cohort: counts per reason, training units, the join, and
    preprocessed arrays equal to the simulated images (MONOCHROME1, 2x files and MR series)."""
    from pipeline.config import cache_dir_for
    from pipeline.imaging.cache import PreprocessCache
    from pipeline.ingest.scan import ingest
    from pipeline.pseudonyms import series_key

    info = make_synthetic_cohort(tmp_path / "c", **{**PARAMS, "workers": None})
    exp = info.expected
    cfg = load_config(info.config_path)
    result = ingest(cfg, key=KEY)
    assert result.found == exp["files_total"]
    assert result.catalogued == exp["files_catalogued"]
    assert result.quarantined == exp["quarantined_by_reason"]
    assert len(result.images) == exp["images_in"]
    joined = join_cohort(result.images, load_clinical(cfg.clinical, key=KEY))
    for name, value in vars(joined.counts).items():
        assert value == exp[name], name

    truth = json.loads(info.truth_path.read_text())
    sim = simulate(
        truth["d"], truth["m"], truth["n_edges"], n=60, image_size=64, n_binary=1, seed=3
    )
    lat = np.load(info.out_dir / "truth_latents.npz")
    row_of = {}
    for i, (sops, series) in enumerate(
        zip(lat["sop_instance_uid"], lat["series_instance_uid"], strict=True)
    ):
        row_of.update({image_key(KEY, s): i for s in str(sops).split("|")})
        row_of[series_key(KEY, str(series))] = i
    cache = PreprocessCache(cache_dir_for(cfg))
    checked = 0
    for img in result.images:
        row = row_of.get(img.image_key, row_of.get(img.series_key or ""))
        assert row is not None
        if lat["follow_up"][row]:
            continue
        arr = cache.get(img.cache_key)  # [1, 64, 64]
        expected = sim.images[int(lat["sample"][row])]  # [1, 64, 64]
        assert np.abs(arr - expected).max() <= 1e-3, img.modality
        checked += 1
    assert checked == exp["images_in"] - int(lat["follow_up"].sum())
    # true_latents maps the joined cohort's keys (MR units included) to the simulated z
    z = true_latents(info.out_dir, key=KEY, image_keys=joined.image_keys)  # [n, m]
    assert not np.isnan(z).any() and z.shape == (len(joined), truth["m"])


def test_cli_synthetic_command(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["synthetic", "--out", str(tmp_path / "s"), "--n-patients", "20"])
    assert ok.exit_code == 0, ok.output
    assert "true edges:" in ok.output and (tmp_path / "s" / "truth.json").is_file()
    bad = runner.invoke(app, ["synthetic", "--out", str(tmp_path / "t"), "--n-patients", "3"])
    assert bad.exit_code == 2 and "too small" in bad.output


# --- realism ----------------------------------------------------------------------------------


def test_realism_cxr_cohort_has_a_site_column_and_records_the_truth(tmp_path):
    info = make_synthetic_cohort(
        tmp_path / "r",
        setting="cxr",
        n_patients=30,
        image_size_dicom=16,
        n_broken=0,
        workers=1,
        realism=REALISM_PRESETS["all"],
    )
    truth = json.loads(info.truth_path.read_text())
    assert info.u_names[-1] == "site" and info.u_types[-1] == "categorical"
    assert truth["u_names"] == ["covid", "icu_admission", "sex", "age", "fev1", "site"]
    # the cxr graph's nuisance latent z4 is the only one on no edge: the site causes it
    assert ("site", "z4") in info.true_edges and len(info.true_edges) == 5
    r = truth["realism"]
    assert r["preset"] == "all" and r["n_sites"] == 3 and r["jitter"] == 1.0
    assert r["site"]["coding"] == {"site_a": 0, "site_b": 1, "site_c": 2}
    assert r["site"]["causes"] == ["z4"] and len(r["site"]["gain"]) == 3
    assert len(r["confounded_latents"]) == 2 and "site" not in truth["binary_coding"]
    con = sqlite3.connect(info.clinical_db)
    sites = {row[0] for row in con.execute("SELECT site FROM clinical_records")}
    con.close()
    assert sites <= {"site_a", "site_b", "site_c"} and len(sites) == 3
    cfg = load_config(info.config_path)
    assert cfg.clinical.variables["site"] == "categorical"
    clinical = load_clinical(cfg.clinical, key=KEY)
    assert clinical.u_types[-1] == "categorical"
    assert clinical.levels["site"] == ("site_a", "site_b", "site_c")
    lat = np.load(info.out_dir / "truth_latents.npz")
    assert lat["pose"].shape == (len(lat["z"]), 4) and lat["u"].shape[1] == 6
    # the site codes stored with the truth are the clinical table's labels' codes
    sim = simulate(5, 5, 4, n=30, image_size=16, n_binary=3, seed=0,
                   edges=[(0, 0, True), (1, 3, False), (3, 1, True), (4, 2, False)],
                   **REALISM_PRESETS["all"].kwargs())  # fmt: skip
    np.testing.assert_array_equal(lat["u"], sim.u[lat["sample"]])


def test_realism_options_and_their_errors(tmp_path):
    assert realism_options() == Realism()
    assert realism_options("all", jitter=0.5, n_sites=None) == Realism(0.5, 1.0, 1.0, 3)
    assert realism_options("clean", n_sites=2).n_sites == 2
    for kwargs, match in (
        ({"preset": "hospital"}, "unknown realism preset"),
        ({"n_sites": 1}, "n_sites"),
        ({"jitter": -1.0}, "jitter"),
    ):
        with pytest.raises(ConfigError, match=match):
            realism_options(**kwargs)
    with pytest.raises(ConfigError, match="at most 26"):
        make_synthetic_cohort(tmp_path / "a", n_patients=20, realism=Realism(n_sites=27))
    with pytest.raises(ConfigError, match="named 'site'"):
        make_synthetic_cohort(
            tmp_path / "b", n_patients=20, d=2, m=2, n_edges=1, n_binary=0,
            var_names=["age", "site"], realism=Realism(n_sites=2),
        )  # fmt: skip


def test_default_cohort_records_no_realism(truth):
    assert truth["realism"]["preset"] == "clean" and "site" not in truth["realism"]
    assert truth["realism"]["confounded_latents"] == [] and truth["realism"]["pose_in"] is None


def test_cli_synthetic_realism_all_writes_a_cohort_whose_config_ingests(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from pipeline.ingest.scan import ingest

    args = ["synthetic", "--n-patients", "30", "--image-size", "16", "--realism", "all"]
    res = CliRunner().invoke(app, [*args, "--jitter", "0.5", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "realism: jitter 0.5, overlap 1, latent correlation 1, 3 scanner sites" in res.output
    truth = json.loads((tmp_path / "s" / "truth.json").read_text())
    assert truth["realism"]["preset"] is None and truth["realism"]["jitter"] == 0.5
    cfg = load_config(tmp_path / "s" / "config.yaml")
    result = ingest(cfg, key=KEY)
    exp = truth["expected"]
    assert result.catalogued == exp["files_catalogued"] and len(result.images) == exp["images_in"]
    joined = join_cohort(result.images, load_clinical(cfg.clinical, key=KEY))
    assert joined.counts.images_joined == exp["images_joined"]
    assert joined.u_names[-1] == "site" and joined.u_types[-1] == "categorical"
    assert set(np.unique(joined.u[:, -1])) <= {0.0, 1.0, 2.0}
    bad = CliRunner().invoke(app, [*args[:-1], "x", "--out", str(tmp_path / "t")])
    assert bad.exit_code == 2 and "unknown realism preset" in bad.output
    assert not (tmp_path / "t").exists()
