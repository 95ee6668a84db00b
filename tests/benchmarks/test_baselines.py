"""Smoke tests for the two-stage baseline representation learners (benchmarks/baselines.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.baselines import (
    BASELINES,
    BaselineConfig,
    TwoStageLearner,
    _tc_mws_terms,
)


@pytest.fixture(scope="module")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 16, 16)).astype(np.float32)  # [n, C, H, W] in [0, 1]
    u = rng.normal(size=(40, 2)).astype(np.float32)  # [n, d]
    return images, u


@pytest.mark.parametrize("kind", BASELINES)
def test_baseline_fits_and_returns_latents(kind: str, tiny_data) -> None:
    images, u = tiny_data
    cfg = BaselineConfig(epochs=2, batch_size=16, base_channels=4, max_channels=8)
    model = TwoStageLearner(kind, latent_dim=3, config=cfg, seed=0, device="cpu")
    assert model.fit(images, u) is model
    z = model.transform(images, u)
    assert z.shape == (40, 3)
    assert np.isfinite(z).all()
    assert len(model.history_) == 2 and all(np.isfinite(model.history_))


def test_seeded_fit_is_deterministic(tiny_data) -> None:
    images, u = tiny_data
    cfg = BaselineConfig(epochs=1, batch_size=16, base_channels=4, max_channels=8)
    z1 = TwoStageLearner("ivae", 2, cfg, "cpu", seed=3).fit(images, u).transform(images, u)
    z2 = TwoStageLearner("ivae", 2, cfg, "cpu", seed=3).fit(images, u).transform(images, u)
    np.testing.assert_array_equal(z1, z2)


def test_tc_terms_sum_to_kl_decomposition() -> None:
    """MI + TC + dimension-wise KL equals log q(z|x) - log p(z) sample by sample."""
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g) * 0.3
    z = mu + torch.randn(8, 3, generator=g) * (0.5 * logvar).exp()
    mi, tc, dw = _tc_mws_terms(z, mu, logvar, n_data=100)
    log_qzx = (-0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(1)
    log_pz = (-0.5 * (np.log(2 * np.pi) + z**2)).sum(1)
    torch.testing.assert_close(mi + tc + dw, log_qzx - log_pz)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        TwoStageLearner("nope", 2).fit(np.zeros((4, 1, 8, 8)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="u must be"):
        TwoStageLearner("vae", 2).fit(np.zeros((4, 1, 8, 8)), np.zeros((3, 1)))


def test_gaussian_likelihood_option(tiny_data) -> None:
    images, u = tiny_data
    cfg = BaselineConfig(epochs=1, batch_size=16, base_channels=4, max_channels=8)
    bern = TwoStageLearner("vae", 2, cfg, "cpu", seed=0).fit(images, u)
    cfg_g = BaselineConfig(
        epochs=1, batch_size=16, base_channels=4, max_channels=8, gaussian_sigma=0.1
    )
    gauss = TwoStageLearner("vae", 2, cfg_g, "cpu", seed=0).fit(images, u)
    assert np.isfinite(gauss.history_).all()
    assert gauss.history_[0] != pytest.approx(bern.history_[0])  # a different objective
