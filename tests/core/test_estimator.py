"""Tests of the CMCL estimator (cmcl_core.estimator): fit, graph direction, interventions,
persistence, determinism, export modules and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.edges import UNUSED_SCALE, LatentRole
from cmcl_core.estimator import CMCL
from cmcl_core.metrics import mcc

FAST = dict(epochs=60, min_epochs=60, num_threads=1, val_fraction=0.0)
TINY = dict(epochs=2, min_epochs=2, batch_size=16, num_threads=1, refit_dag=False)


def two_edge_data(n: int = 300, size: int = 16, seed: int = 0):
    """u0 -> z0 (causal) and z1 -> u1 (anti-causal), saturating additive-noise functions.

    Each latent sets the brightness of its own half (left / right) of the image.

    Returns:
        (images [n, 1, size, size] in [0, 1], u [n, 2], z [n, 2]).
    """
    rng = np.random.default_rng(seed)
    u0 = rng.normal(size=n)
    z0 = 2.0 * np.tanh(1.5 * u0) + 0.3 * rng.normal(size=n)  # u0 -> z0
    z1 = rng.normal(size=n)
    u1 = 2.0 * np.tanh(1.5 * z1) + 0.3 * rng.normal(size=n)  # z1 -> u1
    z = np.stack([z0, z1], 1)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    halves = [1 / (1 + np.exp((xx - 0.5) * 20)), 1 / (1 + np.exp(-(xx - 0.5) * 20))]
    bright = 1 / (1 + np.exp(-z))  # [n, 2] in (0, 1)
    img = 0.15 + sum(0.7 * bright[:, j, None, None] * halves[j] for j in range(2))
    img = img + 0.02 * rng.normal(size=img.shape)
    images = np.clip(img, 0.0, 1.0)[:, None].astype(np.float32)
    return images, np.stack([u0, u1], 1), z


def assert_directions(model: CMCL, images, u, z) -> None:
    """The estimated latents matched to z0 / z1 (Hungarian on |Spearman|) carry the true edges."""
    score, match = mcc(z, model.transform(images, u))
    assert score > 0.5, f"latents not recovered (MCC {score:.2f})"
    edges = {(s, t) for s, t, _ in model.edges_}
    za, zb = f"z{match[0]}", f"z{match[1]}"
    assert ("u0", za) in edges, f"missing causal u0 -> {za}; edges {model.edges_}"
    assert (za, "u0") not in edges
    assert (zb, "u1") in edges, f"missing anti-causal {zb} -> u1; edges {model.edges_}"
    assert ("u1", zb) not in edges


@pytest.fixture(scope="module")
def data():
    return two_edge_data()


@pytest.fixture(scope="module")
def fitted(data):
    images, u, _ = data
    return CMCL(latent_dim=2, seed=0, device="cpu", **FAST).fit(
        images, u, u_types=["continuous", "continuous"], u_names=["u0", "u1"]
    )


def test_recovers_causal_and_anticausal_direction(fitted, data):
    assert_directions(fitted, *data)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recovers_directions_over_seeds(seed):
    images, u, z = two_edge_data(seed=seed)
    model = CMCL(latent_dim=2, seed=seed, device="cpu", **FAST).fit(images, u)
    assert_directions(model, images, u, z)


def test_fitted_attributes(fitted, data):
    images, u, _ = data
    assert fitted.weighted_adjacency_.shape == (4, 4)
    assert np.all(np.diag(fitted.weighted_adjacency_) == 0)
    names = {"u0", "u1", "z0", "z1"}
    for src, dst, w in fitted.edges_:
        assert src in names and dst in names and w != 0
        # bipartite default: every edge joins a u and a z
        assert src.startswith("u") != dst.startswith("u")
    assert fitted.u_names_ == ["u0", "u1"] and fitted.u_types_ == ["continuous"] * 2
    assert fitted.n_features_in_ == 2 and fitted.device_.type == "cpu"
    assert len(fitted.history_) == FAST["epochs"]
    for key in ("loss", "recon", "kl", "link", "h", "rho", "alpha", "seconds"):
        assert key in fitted.history_[-1]
    z = fitted.transform(images[:10], u[:10])
    assert z.shape == (10, 2) and np.all(np.isfinite(z))


def _reconstruction_r2(model: CMCL, images: np.ndarray, u: np.ndarray) -> float:
    """1 - MSE(decode(E[z | x, u]), x) / MSE(mean image, x): the share of pixel variance the
    latents carry (0 for a model that ignores its input)."""
    z = torch.as_tensor(model.transform(images, u))
    with torch.no_grad():
        x_hat = model.decoder_module()(z).numpy()
    mse = float(((x_hat - images) ** 2).mean())
    return 1.0 - mse / float(((images - images.mean(0)) ** 2).mean())


def test_training_learns_the_images_and_the_graph(fitted, data):
    """The loss falls, and what it buys is real: the decoded posterior means explain most of
    the pixel variance (two latents drive the images), and the graph's loss parts shrank."""
    images, u, _ = data
    first, last = fitted.history_[0], fitted.history_[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["recon"] < first["recon"] and last["link"] < first["link"]
    assert _reconstruction_r2(fitted, images, u) > 0.8


def test_intervention_anticausal_unchanged_causal_changes(fitted, data):
    images, u, _ = data
    x, uu = images[:20], u[:20]
    factual = fitted.intervene(x, uu, {})
    anti = fitted.intervene(x, uu, {"u1": 2.0})
    causal = fitted.intervene(x, uu, {"u0": 2.0})
    assert anti.shape == x.shape and causal.shape == x.shape
    assert anti.min() >= 0.0 and anti.max() <= 1.0
    np.testing.assert_array_equal(anti, factual)
    assert np.abs(causal - factual).mean() > 1e-3


def test_intervention_rejects_unknown_variable(fitted, data):
    images, u, _ = data
    with pytest.raises(ValueError, match="cannot intervene on 'age'"):
        fitted.intervene(images[:2], u[:2], {"age": 1.0})


def test_save_load_roundtrip(fitted, data, tmp_path):
    images, u, _ = data
    path = tmp_path / "model.pt"
    fitted.save(str(path))
    loaded = CMCL.load(str(path), device="cpu")
    np.testing.assert_array_equal(loaded.transform(images, u), fitted.transform(images, u))
    np.testing.assert_array_equal(loaded.weighted_adjacency_, fitted.weighted_adjacency_)
    assert loaded.edges_ == fitted.edges_
    np.testing.assert_allclose(  # float32 round-off of the restored causal functions
        loaded.intervene(images[:5], u[:5], {"u0": 1.0}),
        fitted.intervene(images[:5], u[:5], {"u0": 1.0}),
        atol=1e-6,
    )


def test_loads_model_files_of_the_first_format(fitted, data, tmp_path):
    """Format cmcl-1 stored each module under a name ending in "_" ("encoder_.conv...")."""
    import json

    import torch

    images, u, _ = data
    fitted.save(str(tmp_path / "new.pt"))
    blob = torch.load(tmp_path / "new.pt", weights_only=True)
    blob["state"] = {k.replace(".", "_.", 1): v for k, v in blob["state"].items()}
    blob["meta"] = json.dumps({**json.loads(blob["meta"]), "format": "cmcl-1"})
    torch.save(blob, tmp_path / "old.pt")
    loaded = CMCL.load(str(tmp_path / "old.pt"), device="cpu")
    np.testing.assert_array_equal(loaded.transform(images, u), fitted.transform(images, u))
    blob["meta"] = json.dumps({**json.loads(blob["meta"]), "format": "other"})
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a CMCL model file"):
        CMCL.load(str(tmp_path / "bad.pt"))


def test_encoder_module_matches_transform(fitted, data):
    images, u, _ = data
    enc = fitted.encoder_module()
    with torch.no_grad():
        z = enc(torch.as_tensor(images[:30]), torch.as_tensor(u[:30], dtype=torch.float32))
    np.testing.assert_allclose(z.numpy(), fitted.transform(images[:30], u[:30]), atol=1e-6)
    with torch.no_grad():
        x = fitted.decoder_module()(z)
    assert x.shape == (30, 1, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.fixture(scope="module")
def tiny(data):
    images, u, _ = data
    return CMCL(latent_dim=2, seed=1, device="cpu", **TINY).fit(images[64:128], u[64:128])


def test_memmap_input_and_cpu_determinism(tmp_path, data, tiny):
    images, u, _ = data
    shape = images[64:128].shape
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=shape)
    mm[:] = images[64:128]
    again = CMCL(latent_dim=2, seed=1, device="cpu", **TINY).fit(mm, u[64:128])
    np.testing.assert_array_equal(again.transform(mm, u[64:128]), tiny.transform(mm, u[64:128]))
    np.testing.assert_array_equal(again.raw_adjacency_, tiny.raw_adjacency_)


@pytest.mark.slow
def test_another_seed_changes_the_fit_not_the_answer(fitted, data):
    """The seed moves the initialisation, the batches and the rotations, so the latents come
    out in another order or sign; the same latents (up to that) and the same graph come out."""
    images, u, _ = data
    other = CMCL(latent_dim=2, seed=5, device="cpu", **FAST).fit(images, u)
    z0, z1 = fitted.transform(images, u), other.transform(images, u)
    assert not np.array_equal(z0, z1)
    score, match = mcc(z0, z1)  # match[j]: other's latent for fitted's z_j
    assert score > 0.9
    rename = {f"z{int(k)}": f"z{j}" for j, k in enumerate(match)}
    ours = {(s, t) for s, t, _ in fitted.edges_}
    theirs = {(rename.get(s, s), rename.get(t, t)) for s, t, _ in other.edges_}
    assert theirs == ours


def test_refit_equals_fit_on_second_data(data, tiny):
    images, u, _ = data
    model = CMCL(latent_dim=2, seed=1, device="cpu", **TINY)
    model.fit(images[:64], u[:64]).fit(images[64:128], u[64:128])
    np.testing.assert_array_equal(
        model.transform(images[:32], u[:32]), tiny.transform(images[:32], u[:32])
    )
    np.testing.assert_array_equal(model.raw_adjacency_, tiny.raw_adjacency_)


def test_constructor_does_no_work():
    model = CMCL(latent_dim=3, seed=7, lr=1e-2)
    assert model.latent_dim == 3 and model.lr == 1e-2 and model.seed == 7
    assert not hasattr(model, "weighted_adjacency_")
    with pytest.raises(ValueError, match="not fitted"):
        model.transform(np.zeros((1, 1, 16, 16)), np.zeros((1, 1)))


def _bad_inputs(images, u):
    nan_img = images.copy()
    nan_img[0, 0, 0, 0] = np.nan
    nan_u = u.copy()
    nan_u[3, 1] = np.nan
    three = u.copy()
    three[:, 1] = np.arange(len(u)) % 3
    return [
        ("3-D images", dict(images=images[:, 0], u=u), "4-D array"),
        ("row mismatch", dict(images=images[:-1], u=u), "rows must match"),
        ("NaN image", dict(images=nan_img, u=u), "NaN"),
        ("out of range", dict(images=images * 3, u=u), r"\[0, 1\]"),
        ("NaN u", dict(images=images, u=nan_u), "NaN"),
        (
            "binary with 3 values",
            dict(images=images, u=three, u_types=["continuous", "binary"]),
            "declared binary but has 3 distinct",
        ),
        ("names", dict(images=images, u=u, u_names=["a"]), "u_names has 1 entries"),
        ("types", dict(images=images, u=u, u_types=["continuous", "ordinal"]), "unknown variable"),
        ("too few", dict(images=images[:10], u=u[:10]), "fewer than one batch"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_input_raises_value_error(case, data):
    images, u, _ = data
    images, u = images[:64], u[:64]
    name, kwargs, message = _bad_inputs(images, u)[case]
    with pytest.raises(ValueError, match=message):
        CMCL(latent_dim=2, device="cpu", **TINY).fit(**kwargs)


def test_config_from_dict():
    cfg = CMCLConfig.from_dict({"epochs": 3, "posterior_hidden": [8, 8]})
    assert cfg.epochs == 3 and cfg.posterior_hidden == (8, 8)
    assert CMCLConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="epocs"):
        CMCLConfig.from_dict({"epocs": 3})
    with pytest.raises(ValueError, match="batch_size"):
        CMCLConfig(batch_size=1)
    with pytest.raises(ValueError, match="decoder_sparsity"):
        CMCLConfig(decoder_sparsity=-0.1)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rotation_u_weight must be >= 0"):
            CMCLConfig(rotation_u_weight=bad)
    for bad in (50, "abc", (0,), None):
        with pytest.raises(ValueError, match="cr_hidden must be a list of layer widths"):
            CMCLConfig(cr_hidden=bad)
    assert CMCLConfig(posterior_hidden=None).posterior_hidden is None  # width from latent_dim
    # the representation's learning rate: from the number of latents unless set
    assert CMCLConfig().learning_rate(2) == CMCLConfig().learning_rate(4) == 3e-3
    assert CMCLConfig().learning_rate(20) == pytest.approx(7e-4)
    assert CMCLConfig(lr=1e-3).learning_rate(20) == 1e-3
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match="learning rates must be > 0"):
            CMCLConfig(lr=bad)
    # a wrong type is named, not a bare TypeError from a range check (YAML "1e-3" is a string)
    for key, bad, want in (
        ("lr", "1e-3", "lr must be a number or null"),
        ("epochs", 2.5, "epochs must be an integer"),
        ("use_cr", 1, "use_cr must be true or false"),
        ("batch_size", True, "batch_size must be an integer"),
        ("likelihood", 0, "likelihood must be a string"),
    ):
        with pytest.raises(ValueError, match=want):
            CMCLConfig.from_dict({key: bad})
    assert CMCLConfig(epochs=np.int64(3), lambda2=np.float32(0.1), lambda1=1).epochs == 3
    with pytest.raises(TypeError, match="bogus"):
        CMCL(latent_dim=2, bogus=1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):  # checked when fit reads it
        CMCL(latent_dim=2, epochs=0).fit(np.zeros((64, 1, 16, 16)), np.zeros((64, 1)))


def test_parameters_follow_the_scikit_learn_contract():
    """Every CMCLConfig field is a constructor argument with the same default; get_params,
    set_params and clone round-trip them; the constructor stores arguments unchanged."""
    import dataclasses
    import inspect

    sig = inspect.signature(CMCL)
    defaults = {f.name: f.default for f in dataclasses.fields(CMCLConfig)}
    assert {k: sig.parameters[k].default for k in defaults} == defaults
    assert set(sig.parameters) == {"latent_dim", "device", "seed", *defaults}
    model = CMCL(latent_dim=3, epochs=7, dag_hidden=(4,))
    params = model.get_params()
    assert params["latent_dim"] == 3 and params["epochs"] == 7 and params["dag_hidden"] == (4,)
    assert CMCL(**params).get_params() == params
    assert model.set_params(lr=1e-3) is model and model.lr == 1e-3
    with pytest.raises(ValueError, match="unknown CMCL parameter"):
        model.set_params(lr_rate=1)
    assert model.config() == CMCLConfig(epochs=7, dag_hidden=(4,), lr=1e-3)
    assert repr(model) == "CMCL(latent_dim=3, dag_hidden=(4,), lr=0.001, epochs=7)"
    assert CMCL.from_config(model.config(), 3).get_params() == model.get_params()


def test_sklearn_clone_gives_an_unfitted_copy_with_the_same_parameters(fitted):
    base = pytest.importorskip("sklearn.base")
    copy = base.clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "weighted_adjacency_")
    assert base.clone(CMCL(latent_dim=3)).latent_dim == 3


def test_posterior_without_u_and_gaussian_likelihood(data):
    """posterior_uses_u=False: the encoder ignores u; the Gaussian likelihood fits too."""
    images, u, _ = data
    model = CMCL(
        latent_dim=2,
        seed=1,
        device="cpu",
        posterior_uses_u=False,
        likelihood="gaussian",
        **{**TINY, "refit_dag": True, "epochs": 40, "min_epochs": 40},
    ).fit(images[:64], u[:64])
    z = model.transform(images[:32], u[:32])
    np.testing.assert_allclose(model.transform(images[:32], u[:32] + 5.0), z, atol=1e-6)
    assert np.all(np.isfinite(model.weighted_adjacency_))
    # the Gaussian likelihood learns the images: 40 short epochs on 64 images explain a good
    # part of the pixel variance (a collapsed posterior, z constant, would explain none)
    r2 = _reconstruction_r2(model, images[:64], u[:64])
    assert r2 > 0.5, r2
    with pytest.raises(ValueError, match="likelihood"):
        CMCLConfig(likelihood="poisson")


def test_sparsity_term_is_logged_and_can_be_switched_off(data):
    """The optional structural-sparsity term appears in the history when on, not when off
    (the default)."""
    images, u, _ = data
    on = CMCL(latent_dim=2, seed=0, device="cpu", decoder_sparsity=0.03, **TINY)
    on.fit(images[:64], u[:64])
    off = CMCL(latent_dim=2, seed=0, device="cpu", **TINY).fit(images[:64], u[:64])
    assert all(rec["sparsity"] > 0 for rec in on.history_)
    assert all("sparsity" not in rec for rec in off.history_)


def test_posterior_width_grows_with_the_latent_dimension(data):
    images, u, _ = data

    def widths(**kw) -> list[int]:
        model = CMCL(seed=0, device="cpu", **TINY, **kw).fit(images[:64], u[:64])
        return [layer.out_features for layer in model.network_.posterior.net[:-1:2]]

    assert widths(latent_dim=2) == [50, 50, 50]  # Appendix D.3 for small m
    assert widths(latent_dim=10) == [60, 60, 60]  # 6 m above m = 8
    assert widths(latent_dim=2, posterior_hidden=(8, 8)) == [8, 8]


def test_latent_edges_open_the_z_block_of_the_mask_only(data):
    images, u, _ = data
    kw = dict(TINY, refit_dag=True, orient_edges=False)
    model = CMCL(latent_dim=2, seed=0, device="cpu", latent_edges=True, **kw).fit(images, u)
    allowed = model.structure_data_.allowed  # [(d + m), (d + m)] order u, z: the final solve's
    # two epochs leave one latent hardly decoded: unused latents are masked out (tested below)
    used = [model.latent_roles_[f"z{j}"] is not LatentRole.UNUSED for j in range(2)]
    assert used.count(True) >= 1
    assert allowed[2, 3] == allowed[3, 2] == all(used)  # z0 - z1
    assert not allowed[0, 1] and not allowed[1, 0]  # no u - u
    assert allowed[0, 2] == used[0] and allowed[3, 1] == used[1]  # u - z as before
    plain = CMCL(latent_dim=2, seed=0, device="cpu", **kw).fit(images, u)
    assert not plain.structure_data_.allowed[2:, 2:].any()


@pytest.mark.slow
def test_latents_the_decoder_does_not_use_are_unused_and_out_of_the_graph(data):
    """Two latents more than the images' two factors: the extra ones hardly change the decoded
    image, are reported ``unused`` and get no edge (before the image effect, the rotation's
    whitening gave them unit spread and they were read as nuisance factors, or as causes)."""
    images, u, _ = data
    model = CMCL(latent_dim=4, seed=0, device="cpu", **FAST).fit(
        images, u, u_types=["continuous", "continuous"], u_names=["u0", "u1"]
    )
    share = model.image_effect_ / model.image_effect_.max()
    unused = [f"z{j}" for j in range(4) if share[j] < UNUSED_SCALE]
    assert len(unused) == 2, share
    assert all(model.latent_roles_[z] is LatentRole.UNUSED for z in unused)
    assert not any(z in (s, t) for s, t, _ in model.edges_ for z in unused), model.edges_
    assert not model.structure_data_.allowed[:, [2 + int(z[1:]) for z in unused]].any()
    edges = {(s, t) for s, t, _ in model.edges_}
    used = [f"z{j}" for j in range(4) if f"z{j}" not in unused]
    assert any(("u0", z) in edges for z in used), edges  # u0 -> z0, through a used latent
    assert any((z, "u1") in edges for z in used), edges  # z1 -> u1
