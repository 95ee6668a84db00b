"""The brain cohort: one MR series per patient, brain-rendered images, the glioma graph."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmcl_core.simulate import REALISM_PRESETS, simulate
from pipeline.clinical.join import join_cohort
from pipeline.clinical.source import load_clinical
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.synthetic.cohort import NAMED_COHORTS, make_synthetic_cohort
from pipeline.synthetic.files import true_latents
from pipeline.synthetic.writer import MAX_STORED

KEY = b"brain-cohort-test-key-0123456789"
PARAMS = dict(n_patients=40, seed=4, image_size_dicom=32, mr_slices=4, n_broken=3, workers=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("brain") / "c", setting="brain", **PARAMS)


@pytest.fixture(scope="module")
def truth(cohort):
    return json.loads(cohort.truth_path.read_text())


def test_truth_records_the_graph_and_what_each_latent_means(cohort, truth):
    assert truth["setting"] == "brain" and truth["renderer"] == "brain"
    assert truth["image_modality"] == "MR"
    assert truth["u_names"] == ["idh_mutation", "age", "kps"]
    assert truth["u_types"] == ["binary", "continuous", "continuous"]
    assert truth["z_meanings"] == ["enhancement", "ventricle_size", "tumour_size", "oedema"]
    edges = {(e["source"], e["target"]) for e in truth["edges"]}
    assert edges == {("idh_mutation", "z0"), ("age", "z1"), ("z2", "kps")}
    assert set(cohort.true_edges) == edges
    oedema = truth["node_order"].index("z3")
    B = np.array(truth["B_true"])  # [7, 7]
    assert B[oedema].sum() == 0 and B[:, oedema].sum() == 0  # the nuisance latent
    assert truth["z_cells"][0] == truth["z_cells"][2] == truth["z_cells"][3]  # co-located
    assert truth["binary_coding"] == {"idh_mutation": {"negative": 0, "positive": 1}}


def test_every_image_is_an_mr_series_of_a_brain_slice(cohort, truth):
    exp = truth["expected"]
    broken = {b["file"] for b in truth["broken_files"]}
    assert exp["radiograph_files"] == 0 and exp["monochrome1_files"] == 0
    # every patient with an image (all but the records without one) has a series
    assert exp["mr_series"] == PARAMS["n_patients"] - exp["records_without_image"]
    assert exp["mr_files"] == PARAMS["mr_slices"] * exp["mr_series"]
    files = sorted(p for p in cohort.dicom_dir.rglob("*.dcm"))
    assert len(files) == exp["files_total"]
    series = [p for p in files if p.relative_to(cohort.out_dir).as_posix() not in broken]
    assert {p.parent.name[:10] for p in series} == {"mr_series_"}
    assert len({p.parent for p in series}) == exp["mr_series"]
    sim = simulate(
        3, 4, 3, n=PARAMS["n_patients"], image_size=32, n_binary=1, seed=PARAMS["seed"],
        edges=NAMED_COHORTS["brain"].edges, renderer="brain",
    )  # fmt: skip
    lat = np.load(cohort.out_dir / "truth_latents.npz")
    by_sop = {sop: i for i, sops in enumerate(lat["sop_instance_uid"]) for sop in sops.split("|")}
    full = 0
    for path in series:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "MR" and ds.Rows == ds.Columns == 32
        sample = int(lat["sample"][by_sop[str(ds.SOPInstanceUID)]])
        stored = np.rint(sim.images[sample, 0] * MAX_STORED)  # [32, 32]
        full += int(np.array_equal(ds.pixel_array, stored))
    assert full == 2 * exp["mr_series"]  # the two central slices hold the image exactly


def test_clinical_table(cohort):
    con = sqlite3.connect(cohort.clinical_db)
    try:
        rows = con.execute("SELECT idh_mutation, age, kps FROM clinical_records").fetchall()
    finally:
        con.close()
    assert {r[0] for r in rows} <= {"negative", "positive", None}
    assert all(isinstance(r[2], float) for r in rows if r[2] is not None)


def test_ingest_catalogues_one_training_unit_per_patient(cohort, truth):
    from pipeline.ingest.scan import ingest  # deferred: the imaging stack (MONAI, SimpleITK)

    cfg = load_config(cohort.config_path)
    assert "MR" in cfg.dicom.modalities
    exp = truth["expected"]
    result = ingest(cfg, key=KEY)
    assert result.found == exp["files_total"]
    assert result.quarantined == exp["quarantined_by_reason"]
    assert len(result.images) == exp["images_in"] == exp["mr_series"]
    assert {im.modality for im in result.images} == {"MR"}
    assert len({im.patient_key for im in result.images}) == len(result.images)
    joined = join_cohort(result.images, load_clinical(cfg.clinical, key=KEY))
    for name, value in vars(joined.counts).items():
        assert value == exp[name], name
    z = true_latents(cohort.out_dir, key=KEY, image_keys=joined.image_keys)  # [n, 4]
    assert z.shape == (exp["images_joined"], 4) and not np.isnan(z).any()


def test_realism_pose_applies_and_overlap_is_refused(tmp_path):
    posed = make_synthetic_cohort(
        tmp_path / "p", setting="brain", n_patients=20, mr_slices=2, workers=1,
        realism=REALISM_PRESETS["pose"],
    )  # fmt: skip
    assert json.loads(posed.truth_path.read_text())["realism"]["jitter"] == 1.0
    with pytest.raises(ConfigError, match="share one location"):
        make_synthetic_cohort(
            tmp_path / "o", setting="brain", n_patients=20, realism=REALISM_PRESETS["overlap"]
        )


def test_an_mr_subset_is_refused_for_a_cohort_of_mr_series_only(tmp_path):
    with pytest.raises(ConfigError, match="mr_patients=3 does not apply") as err:
        make_synthetic_cohort(tmp_path / "m", setting="brain", n_patients=20, mr_patients=3)
    assert "--mr-patients" in err.value.fix
    assert not (tmp_path / "m" / "dicom").exists()  # refused before anything is written


def test_cli_synthetic_setting_brain(tmp_path: Path):
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "s"
    args = ["synthetic", "--setting", "brain", "--n-patients", "20", "--image-size", "32"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "idh_mutation -> z0" in res.output and "z2 -> kps" in res.output
    assert "MR series" in res.output
    assert json.loads((out / "truth.json").read_text())["image_modality"] == "MR"
