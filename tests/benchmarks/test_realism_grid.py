"""Tests of the realism grid: its scores, the site column, the report and the resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import paper_synthetic as ps
from benchmarks import realism_grid as rg
from cmcl_core.realism import Realism
from cmcl_core.simulate import simulate_setting

FIELDS = ("mcc", "skeleton_shd", "shd", "wrong_claims", "claims", "fit_s", "sim_s", "edges")


def test_clean_preset_is_the_paper_process() -> None:
    clean = simulate_setting(
        "4/10", n=50, image_size=16, seed=3, **Realism.preset("clean").kwargs()
    )
    plain = simulate_setting("4/10", n=50, image_size=16, seed=3)
    np.testing.assert_array_equal(clean.images, plain.images)
    np.testing.assert_array_equal(clean.u, plain.u)
    np.testing.assert_array_equal(clean.B_true, plain.B_true)


def test_skeleton_shd_ignores_direction() -> None:
    B = np.zeros((3, 3), int)
    B[0, 2] = 1
    assert rg.skeleton_shd(B, B.T) == 0  # reversed: same adjacency
    extra = B.copy()
    extra[1, 2] = 1
    assert rg.skeleton_shd(B, extra) == 1 and rg.skeleton_shd(B, np.zeros_like(B)) == 1


def test_claims_with_the_site_column() -> None:
    """The true graph scores zero; a reversed continuous edge is a wrong claim (plain SHD 1,
    skeleton 0); the site edge is never a claim; latents are matched before scoring."""
    data = rg.simulate_preset("site", "4/10", seed=0, n=200, image_size=16)
    d, m = data.u.shape[1], data.z.shape[1]
    assert data.u_names[-1] == "site" and data.B_true.shape == (d + m, d + m)
    perm = np.arange(m)[::-1]  # z_hat column k is true latent perm[k]
    z_hat = data.z[:, perm]
    idx = np.concatenate([np.arange(d), d + np.argsort(perm)])  # true order -> z_hat order
    W = np.zeros_like(data.B_true, dtype=float)
    W[np.ix_(idx, idx)] = data.B_true  # the truth in z_hat's order
    truth = rg.claim_scores(data, z_hat, W)
    assert truth["skeleton_shd"] == 0 and truth["wrong_claims"] == 0
    assert truth["undetermined"] == 1 and truth["claims"] == len(data.edges) - 1
    assert all(e[3] == "true" for e in truth["edges"])
    i, j = next((i, j) for i, j in np.argwhere(W != 0) if d - 1 not in (i, j))  # not the site's
    W_rev = W.copy()
    W_rev[i, j], W_rev[j, i] = 0.0, 1.0
    rev = rg.claim_scores(data, z_hat, W_rev)
    assert rev["skeleton_shd"] == 0 and rev["wrong_claims"] == 1
    assert ps._score(data, z_hat, W_rev, mic_max_latents=0)["shd"] == 1


def test_extra_latents_are_isolated_nodes_of_the_truth() -> None:
    """A fit with two latents more than the truth: the true graph over the matched latents
    scores zero, and an edge of an unmatched latent is spurious (and makes it ``clinical``)."""
    data = rg.simulate_preset("clean", "4/10", seed=0, n=200, image_size=16)
    d, m = data.u.shape[1], data.z.shape[1]
    rng = np.random.default_rng(0)
    z_hat = np.concatenate(
        [data.z, rng.standard_normal((200, 1)), 1e-3 * rng.standard_normal((200, 1))], 1
    )
    W = np.zeros((d + m + 2, d + m + 2))
    W[: d + m, : d + m] = data.B_true
    clean = rg.claim_scores(data, z_hat, W)
    assert clean["skeleton_shd"] == 0 and clean["wrong_claims"] == 0
    assert clean["extra_roles"] == {"clinical": 0, "nuisance": 1, "unused": 1}
    effect = np.r_[np.ones(m), 0.01, 1.0]  # a CMCL fit's image effect overrides the spread
    assert rg.claim_scores(data, z_hat, W, effect)["extra_roles"]["unused"] == 1
    assert rg.claim_scores(data, z_hat, W, effect)["roles"]["unused"] == 1
    assert ps._score(data, z_hat, W, mic_max_latents=0)["shd"] == 0
    W[d + m, 0] = 1.0  # the nuisance latent -> u0
    spurious = rg.claim_scores(data, z_hat, W)
    assert spurious["skeleton_shd"] == 1 and spurious["wrong_claims"] == 1
    assert spurious["extra_roles"]["clinical"] == 1
    assert [f"z{m}", "u0"] not in [e[:2] for e in spurious["edges"]]  # named as matched to none
    assert ["extra0", "u0", "data", "absent"] in spurious["edges"]
    assert ps._score(data, z_hat, W, mic_max_latents=0)["shd"] == 1
    with pytest.raises(ValueError, match="at least the true"):
        rg.claim_scores(data, z_hat[:, : m - 1], W[: d + m - 1, : d + m - 1])


def test_learner_input_one_hots_the_site() -> None:
    u = np.array([[0.5, 2.0], [1.5, 0.0], [2.5, 1.0]])
    out = ps._learner_u(u, ["continuous", "categorical"])
    np.testing.assert_array_equal(out, [[0.5, 0, 0, 1], [1.5, 1, 0, 0], [2.5, 0, 1, 0]])
    assert ps._learner_u(u, ["continuous", "continuous"]) is u  # unchanged without one


def _check_records(out, n_records: int) -> list[dict]:
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert len(records) == n_records
    for r in records:
        for key in FIELDS:
            assert key in r, key
        assert 0.0 <= r["mcc"] <= 1.0 and r["skeleton_shd"] <= r["shd"]
        assert r["wrong_claims"] <= r["claims"]
        assert (r["n"], r["image_size"], r["epochs"]) == (200, 16, 3)
    text = (out / "results.md").read_text()
    assert "MCC / skeleton SHD / wrong claims" in text and "load average" in text
    return records


def _refuse_to_fit(*args, **kwargs):
    raise AssertionError("a recorded cell was fitted again")


def test_grid_records_and_resume(tmp_path, monkeypatch) -> None:
    """Oracle-like fits (the true latents and graph) through the grid: fields, the site edge,
    the report, and a rerun that fits nothing."""

    def true_fit(data, method, seed, base, device, mic_max_latents, extra_scores):
        scores = extra_scores(data, data.z, data.B_true, effect=None)
        return {"mcc": 1.0, "shd": 0.0, "fit_s": 0.1, **scores}

    monkeypatch.setattr(ps, "run_cell", true_fit)
    argv = ["--quick", "--presets", "clean", "site", "--methods", "pca", "--out", str(tmp_path)]
    assert rg.main(argv) == 0
    records = _check_records(tmp_path, 2)
    assert [r["preset"] for r in records] == ["clean", "site"]
    assert all(r["skeleton_shd"] == 0 and r["wrong_claims"] == 0 for r in records)
    assert any(e[0] == "site" for e in records[1]["true_edges"])
    monkeypatch.setattr(ps, "run_cell", _refuse_to_fit)
    assert rg.main(argv) == 0
    _check_records(tmp_path, 2)
    assert len(json.loads((tmp_path / "results.json").read_text())["meta"]["runs"]) == 2


def test_another_protocol_is_refused(tmp_path) -> None:
    rec = {"preset": "clean", "setting": "4/10", "seed": 0, "method": "pca", "n": 1000,
           "image_size": 32, "epochs": 40}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"runs": []}, "records": [rec]}))
    with pytest.raises(SystemExit, match="another --out"):
        rg.main(["--quick", "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_run_fits_and_resumes(tmp_path, monkeypatch) -> None:
    """A real --quick fit (PCA and the structure step on the site preset), then a rerun."""
    argv = ["--quick", "--presets", "site", "--methods", "pca", "--threads", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert rg.main(argv) == 0
    (rec,) = _check_records(tmp_path, 1)
    assert rec["preset"] == "site" and rec["split"] == "tuning" and rec["fit_s"] > 0
    monkeypatch.setattr(ps, "run_cell", _refuse_to_fit)
    assert rg.main(argv) == 0
    _check_records(tmp_path, 1)
