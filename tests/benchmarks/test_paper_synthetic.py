"""Tests of the synthetic benchmark's plumbing (latent matching, scoring, report, resume)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import paper_synthetic as ps
from benchmarks.synthetic_report import markdown, write_report


def _fake_data(n: int = 60, seed: int = 0) -> SimpleNamespace:
    """u0 -> z0, z1 -> u1; images are a fixed random projection of z (a tiny stand-in)."""
    rng = np.random.default_rng(seed)
    u0 = rng.normal(size=n)
    z = np.stack([np.tanh(u0) + 0.3 * rng.normal(size=n), rng.normal(size=n)], 1)  # [n, 2]
    u1 = z[:, 1] ** 2 + 0.3 * rng.normal(size=n)
    proj = rng.normal(size=(2, 16 * 16))
    images = 1 / (1 + np.exp(-(z @ proj))).reshape(n, 1, 16, 16)  # [n, 1, 16, 16]
    B = np.zeros((4, 4))
    B[0, 2] = B[3, 1] = 1  # order u0, u1, z0, z1
    return SimpleNamespace(
        images=images.astype(np.float32),
        u=np.stack([u0, u1], 1).astype(np.float32),
        z=z,
        u_types=["continuous", "continuous"],
        u_names=["u0", "u1"],
        B_true=B,
    )


def test_permuted_puts_matched_latent_in_true_position() -> None:
    W = np.zeros((4, 4))
    W[0, 3] = 0.9  # u0 -> z_hat1
    W[2, 1] = 0.7  # z_hat0 -> u1
    P = ps._permuted(W, d=2, matching=np.array([1, 0]))  # true z0 is z_hat1, true z1 is z_hat0
    expected = np.zeros((4, 4))
    expected[0, 2], expected[3, 1] = 0.9, 0.7
    np.testing.assert_array_equal(P, expected)


def test_score_of_the_truth_is_perfect() -> None:
    data = _fake_data()
    z_hat = data.z[:, ::-1] * 2.0  # permuted, rescaled latents
    W = np.zeros((4, 4))
    W[0, 3] = W[2, 1] = 1.0  # the true graph in z_hat's order
    rec = ps._score(data, z_hat, W, mic_max_latents=12)
    assert rec["shd"] == 0 and rec["tpr"] == 1.0 and rec["fdr"] == 0.0
    assert rec["mic"] > 99 and rec["mcc"] > 0.99 and rec["matching"] == "mic"
    rec_mcc = ps._score(data, z_hat, W, mic_max_latents=1)
    assert rec_mcc["matching"] == "mcc" and rec_mcc["shd"] == 0


def _check_cell_and_report(rec: dict, tmp_path) -> None:
    for key in ("shd", "tpr", "fpr", "fdr", "mic", "mcc", "fit_s"):
        assert np.isfinite(rec[key]), key
    assert rec["epoch_s"] is None or rec["epoch_s"] > 0  # None: no training epochs (pca)
    rec.update(setting="3/10", seed=0, method="vae", command="cmd", n=60, image_size=16, epochs=1)
    cmcl = dict(rec, method="cmcl", setting="20/40", split="held-out")
    paper = dict(cmcl, method="cmcl_paper", shd=7.0)
    results = {"meta": {"wall_s_total": 1.0, "runs": []}, "records": [rec, cmcl, paper]}
    text = markdown(results)
    assert "## Tuning seeds" in text and "## Held-out seeds" in text and "## Other" not in text
    assert "#### Ablation at 20/40" in text and "4.81" in text and "[7]" in text
    write_report(results, tmp_path)
    assert (tmp_path / "figure2.png").stat().st_size > 1000


TINY = ps.recipe(1, base_channels=4, max_channels=8, batch_size=16)


@pytest.mark.parametrize("method", ["vae", "pca"])
def test_two_stage_cell_passes_mask_and_types(method, tmp_path, monkeypatch) -> None:
    """The structure step gets [u, standardised z_hat], the bipartite mask, the u types and
    the recipe."""
    data = _fake_data()
    seen = {}

    def fake_solve(X, var_types, allowed, seed, cfg):
        seen.update(X=X, var_types=var_types, allowed=allowed, cfg=cfg)
        return np.zeros((4, 4))

    monkeypatch.setattr(ps, "solve_structure", fake_solve)
    rec = ps.run_cell(data, method, seed=0, base=TINY, device="cpu")
    assert seen["X"].shape == (60, 4) and seen["cfg"] is TINY
    np.testing.assert_allclose(seen["X"][:, :2], data.u, rtol=1e-6)
    np.testing.assert_allclose(seen["X"][:, 2:].std(0), 1.0, rtol=1e-3)
    assert seen["var_types"] == ["continuous"] * 4
    assert not seen["allowed"][:2, :2].any() and seen["allowed"][0, 2]
    assert rec["shd"] == 2 and rec["tpr"] == 0.0  # the empty graph misses both true edges
    _check_cell_and_report(rec, tmp_path)


@pytest.mark.slow
def test_every_method_trains_and_solves_with_the_one_recipe(monkeypatch) -> None:
    """CMCL and every two-stage learner: the same structure-step settings (the recipe object
    itself), the same epochs, batch, likelihood, init, standardisation, rate and width rules."""
    import cmcl_core.training
    from benchmarks import baselines

    solved, learners = {}, []
    real_solve = ps.solve_structure

    def recording_solve(X, var_types, allowed, seed, cfg):
        solved[len(solved)] = cfg
        return real_solve(X, var_types, allowed, seed, cfg)

    class RecordingLearner(baselines.TwoStageLearner):
        def fit(self, images, u):
            learners.append(self)
            return super().fit(images, u)

    monkeypatch.setattr(ps, "solve_structure", recording_solve)
    monkeypatch.setattr(cmcl_core.training, "solve_structure", recording_solve)
    monkeypatch.setattr(ps, "TwoStageLearner", RecordingLearner)
    methods = ["cmcl", "vae", "betavae", "ivae", "ivae_rot", "pca", "oracle"]
    records = {m: ps.run_cell(_fake_data(), m, seed=0, base=TINY, device="cpu") for m in methods}
    assert len(solved) == len(methods)
    for cfg in solved.values():  # one structure step: lambda1, threshold, orientation, ...
        assert cfg == TINY
    m = 2
    assert records["cmcl"]["epochs_run"] == TINY.epochs
    for learner in learners:
        cfg = learner.config
        assert len(learner.history_) == TINY.epochs == cfg.epochs
        assert cfg.batch_size == TINY.batch_size and cfg.lr == TINY.learning_rate(m)
        assert cfg.gaussian_sigma == TINY.gaussian_sigma and TINY.likelihood == "gaussian"
        assert cfg.he_init is TINY.he_init is True
        assert cfg.standardize_images is TINY.standardize_images is True
        assert cfg.hidden == max(50, 6 * m) and cfg.kl_weight == TINY.beta_cm
        assert (cfg.base_channels, cfg.max_channels) == (TINY.base_channels, TINY.max_channels)
        assert float(learner.net_.encoder.x_scale) != 1.0  # the input was standardised
    assert "rotation_gain" in records["ivae_rot"]


def test_ablation_variants_change_one_part_each() -> None:
    base = ps.recipe(40)
    paper = ps.variant_config(base, "cmcl_paper")
    assert (paper.rotate_every, paper.refit_dag, paper.orient_edges) == (0, False, False)
    rot = ps.variant_config(base, "cmcl_paper_rot")
    assert rot.rotate_every == base.rotate_every and not rot.refit_dag
    assert rot.rotate_until == 40 - ps.JOINT_DAG_EPOCHS  # the joint DAG settles after it
    refit = ps.variant_config(base, "cmcl_paper_rot_refit")
    assert refit.refit_dag and not refit.orient_edges and refit.rotate_until == base.rotate_until
    assert ps.variant_config(base, "cmcl") == base
    nocm = ps.variant_config(base, "cmcl_nocm")
    assert not nocm.use_cm and nocm.rotate_every == 0 and nocm.refit_dag and nocm.orient_edges
    assert ps.variant_config(base, "cmcl_nocr").use_cr is False
    assert (base.epochs, base.min_epochs, base.val_fraction) == (40, 40, 0.0)


def test_seed_groups() -> None:
    assert [ps.seed_split(s) for s in (0, 4, 10, 14, 7)] == [
        "tuning", "tuning", "held-out", "held-out", "other"
    ]  # fmt: skip


def test_resume_refuses_to_overwrite(tmp_path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"meta": {}, "records": []}))
    with pytest.raises(SystemExit, match="--resume"):
        ps.main(["--out", str(tmp_path), "--settings", "4/10", "--methods", "vae"])


def test_resume_refuses_a_different_protocol(tmp_path) -> None:
    rec = {"setting": "4/10", "seed": 0, "method": "vae", "n": 50, "image_size": 32, "epochs": 2}
    (tmp_path / "results.json").write_text(
        json.dumps({"meta": {"wall_s_total": 0.0, "runs": []}, "records": [rec]})
    )
    with pytest.raises(SystemExit, match="another --out"):
        ps.main(["--out", str(tmp_path), "--resume", "--n", "60", "--methods", "vae"])


def test_cli_defaults_and_quick() -> None:
    full = ps.parse_args([])
    assert "oracle" not in full.methods and "cmcl_nocm" not in full.methods
    assert "ivae" in full.methods and "pca" in full.methods and full.epochs == 40
    assert len(full.seeds) == 5 and "20/40" in full.settings and full.image_size == 32
    quick = ps.parse_args(["--quick"])
    assert quick.settings == ["4/10"] and quick.seeds == [0] and quick.methods == ["cmcl", "ivae"]
    assert quick.n == 300 and quick.epochs == 3
    assert ps.parse_args(["--cmcl-set", "lambda_cr=0.5", "acyclicity=logdet"]).cmcl_set == {
        "lambda_cr": 0.5,
        "acyclicity": "logdet",
    }


def test_failed_cell_is_recorded_and_run_continues(tmp_path, monkeypatch) -> None:
    import cmcl_core.simulate

    monkeypatch.setattr(cmcl_core.simulate, "simulate_setting", lambda *a, **k: _fake_data())

    def run_cell(data, method, *args, **kwargs):
        if method == "vae":
            raise ValueError("continuous column 3 is constant")
        return {"shd": 0.0, "tpr": 1.0, "fpr": 0.0, "fdr": 0.0, "mic": 90.0, "mcc": 0.9,
                "fit_s": 1.0, "epoch_s": 0.1}  # fmt: skip

    monkeypatch.setattr(ps, "run_cell", run_cell)
    argv = ["--out", str(tmp_path), "--settings", "4/10", "--seeds", "0"]
    assert ps.main([*argv, "--methods", "vae", "pca"]) == 0
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [r["method"] for r in records] == ["vae", "pca"]
    assert "constant" in records[0]["error"] and records[1]["shd"] == 0.0
    assert "Failed cells" in (tmp_path / "results.md").read_text()
