"""Sparse latent rotation: finds a hidden rotation and preserves the decoded means."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.estimator import CMCL
from cmcl_core.rotation import (
    jacobian_at,
    rewritten_parameters,
    rotate_latents,
    sparsest_oblique,
    sparsest_rotation,
)
from cmcl_core.training import rotation_due


def test_sparsest_rotation_undoes_a_mixing_rotation():
    # a Jacobian with disjoint column supports, mixed by a 30-degree rotation
    J = torch.zeros(2, 10, 2, dtype=torch.float64)
    J[:, :5, 0] = 1.0
    J[:, 5:, 1] = 0.5
    c, s = math.cos(0.5), math.sin(0.5)
    mixed = J @ torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    R = sparsest_rotation(mixed)
    assert torch.allclose(R.T @ R, torch.eye(2, dtype=torch.float64), atol=1e-6)  # float32 search
    unmixed = (mixed @ R).abs()
    # each column of the result drives one block: a signed permutation of J
    assert unmixed.sum() < mixed.abs().sum() * 0.8
    assert torch.allclose(unmixed.sum(), J.abs().sum(), rtol=1e-2)


def test_jacobian_at_matches_autograd():
    dec = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    z = torch.randn(2, 3)
    J = jacobian_at(lambda v: dec(v).view(v.shape[0], 1, 2, 2), z, torch.full((3,), 1e-3))
    exact = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: torch.sigmoid(dec(v)), z[i]) for i in (0, 1)]
    )  # [2, 4, 3]
    torch.testing.assert_close(J, exact, atol=2e-3, rtol=1e-2)


def _noise_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 16, 16)).astype(np.float32), rng.standard_normal((n, 2))


def _tiny_fit(n: int, data_seed: int, **kw) -> tuple[CMCL, np.ndarray, np.ndarray]:
    """A few epochs on pixel noise (no rotation unless asked): a model to rotate."""
    images, u = _noise_data(n, data_seed)
    cfg = dict(latent_dim=3, seed=0, device="cpu", epochs=2, min_epochs=2, batch_size=16)
    cfg.update(rotate_every=0, refit_dag=False, num_threads=1)
    return CMCL(**{**cfg, **kw}).fit(images, u), images, u


@pytest.mark.parametrize("oblique", [False, True])
def test_the_clinical_term_turns_latents_onto_the_variables_they_correlate_with(oblique):
    """Pixel responses spread evenly over all directions give the Jacobian term no preferred
    basis; one clinical variable correlated with a 30-degree mix of the latents then decides
    it with ``weight`` > 0 (the variable ends correlated with one latent), and without it the
    search stays where it started."""
    phi = torch.arange(360, dtype=torch.float64) * math.pi / 180
    J_w = torch.stack([torch.cos(phi), torch.sin(phi)], 1)[None]  # [1, 360, 2]
    K = torch.tensor([[math.cos(0.5), math.sin(0.5)]], dtype=torch.float64)  # [d=1, m=2]

    def search(weight: float) -> torch.Tensor:
        if oblique:  # the new latents G w: their correlations with u are K G^T
            return K @ sparsest_oblique(J_w, K=K, weight=weight).T
        return K @ sparsest_rotation(J_w, K=K, weight=weight)

    turned = search(1.0).abs().sort().values[0]
    assert turned[1] > 0.99 and turned[0] < 0.05, turned
    kept = search(0.0).abs()[0]
    assert torch.allclose(kept, K.abs()[0], atol=0.05), kept


def _own_parameters(model: CMCL) -> list[torch.nn.Parameter]:
    return list(model.network_.parameters())


@pytest.mark.parametrize(("oblique", "u_weight"), [(False, 0.0), (True, 0.0), (False, 1.0)])
def test_rotation_preserves_the_decoded_posterior_means(oblique, u_weight):
    model, images, u = _tiny_fit(96, data_seed=0)
    net = model.network_
    z_before = net.posterior_means(images, u)
    with torch.no_grad():
        x_before = torch.sigmoid(net.decoder(torch.as_tensor(z_before, dtype=torch.float32)))
    rotate_latents(net, z_before, seed=0, oblique=oblique, u=u, u_weight=u_weight)
    z_after = net.posterior_means(images, u)
    with torch.no_grad():
        x_after = torch.sigmoid(net.decoder(torch.as_tensor(z_after, dtype=torch.float32)))
    torch.testing.assert_close(x_after, x_before, atol=1e-4, rtol=1e-4)
    # the new latents have zero mean and unit variance; orthogonal ones are also uncorrelated
    np.testing.assert_allclose(z_after.mean(0), 0.0, atol=1e-3)
    cov = np.cov(z_after.T)
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=1e-2)
    if not oblique:
        np.testing.assert_allclose(cov, np.eye(3), atol=1e-2)


def test_sparsest_oblique_map_finds_correlated_factors():
    """Sparse loadings of correlated factors: no orthogonal rotation of the whitened
    coordinates is sparse, the oblique map recovers the loadings and the correlations."""
    rng = np.random.default_rng(0)
    loadings = np.zeros((64, 4))  # [P, m], one block of 16 pixels per factor
    for j in range(4):
        loadings[16 * j : 16 * (j + 1), j] = rng.uniform(0.5, 1.5, 16)
    phi = np.array([[1, 0.5, 0.5, 0], [0.5, 1, 0.5, 0], [0.5, 0.5, 1, 0], [0, 0, 0, 1.0]])
    J_w = torch.tensor((loadings @ np.linalg.cholesky(phi))[None])  # [1, P, m], w white
    G = sparsest_oblique(J_w)
    np.testing.assert_allclose(G.norm(dim=1).numpy(), 1.0, atol=1e-12)  # unit variances
    found = (J_w @ torch.linalg.inv(G))[0].abs().numpy()  # [P, m]
    assert (found > 1e-2).sum() == 64, "every pixel driven by exactly one latent"
    np.testing.assert_allclose(np.abs(G @ G.T).numpy(), phi, atol=0.02)
    R = sparsest_rotation(J_w)  # the orthogonal search cannot separate them
    assert ((J_w @ R)[0].abs().numpy() > 1e-2).sum() > 80


def test_rewritten_parameters_are_exactly_those_a_rotation_changes():
    model, images, u = _tiny_fit(64, data_seed=1, epochs=1, min_epochs=1)
    params = _own_parameters(model)
    before = [p.detach().clone() for p in params]
    net = model.network_
    rotate_latents(net, net.posterior_means(images, u), seed=0)
    changed = {id(p) for p, b in zip(params, before, strict=True) if not torch.equal(p, b)}
    listed = {id(p) for p in rewritten_parameters(net)}
    # every parameter the rotation touched has its optimiser moments dropped (the DAG's are
    # re-initialised wholesale: a masked or zero weight may come back equal)
    assert changed <= listed
    assert listed - changed <= {id(p) for p in net.dag.parameters()}
    assert len(listed) < len(params) / 2  # the conv stacks keep their moments


def test_a_rotation_drops_only_the_rewritten_layers_adam_moments(monkeypatch):
    import cmcl_core.training as training

    kept = []

    def spy(net, z, seed, *args, **kwargs):
        gain = rotate_latents(net, z, seed, *args, **kwargs)
        own = {id(p) for p in net.parameters()}
        kept.append((own, {id(p) for p in rewritten_parameters(net)}))
        return gain

    monkeypatch.setattr(training, "rotate_latents", spy)
    seen = {}
    real_pop = dict.pop

    class Watch(defaultdict):
        def pop(self, key, *default):
            seen[id(key)] = True
            return real_pop(self, key, *default)

    real_init = torch.optim.Adam.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self.state = Watch(dict, self.state)

    monkeypatch.setattr(torch.optim.Adam, "__init__", init)
    _tiny_fit(64, data_seed=0, latent_dim=2, rotate_every=1, rotate_until=1)
    ((own, rewritten),) = kept  # ids taken at the rotation (the final refit replaces the DAG)
    assert set(seen) & own == rewritten


def test_rotation_schedule():
    class Net:  # stands for a network with or without the CM module
        has_cm = True

    net = Net()

    def due(**kw) -> list[int]:
        cfg = CMCLConfig(**kw)
        return [e + 1 for e in range(cfg.epochs) if rotation_due(cfg, e, net)]

    assert due(epochs=40, rotate_every=5, rotate_until=40) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert due(epochs=60, rotate_every=5, rotate_until=30) == [5, 10, 15, 20, 25, 30]
    assert due(epochs=12, rotate_every=4, rotate_until=40) == [4, 8, 12]
    assert due(epochs=60, rotate_every=0) == []
    # independent of the optional per-step sparsity term, off by default
    assert due(epochs=10, decoder_sparsity=0.0) == due(epochs=10, decoder_sparsity=0.1) == [5, 10]
    net.has_cm = False  # no CM module (ablation): nothing to rotate
    assert due(epochs=60, rotate_every=5) == []


def test_a_last_rotation_precedes_the_final_dag_solve(monkeypatch):
    import cmcl_core.training as training

    seen = []

    def spy(net, z, seed, *args, **kwargs):
        seen.append(seed)
        return rotate_latents(net, z, seed, *args, **kwargs)

    monkeypatch.setattr(training, "rotate_latents", spy)
    images, u = _noise_data(64, seed=0)
    kw = dict(latent_dim=2, seed=0, device="cpu", epochs=3, min_epochs=3, batch_size=16)
    CMCL(**kw, rotate_every=2, num_threads=1).fit(images, u)
    assert seen == [1, 3]  # after epoch 2 (0-based 1), then once more before the DAG solve
    seen.clear()
    CMCL(**kw, rotate_every=3, num_threads=1).fit(images, u)
    assert seen == [2]  # the last epoch rotated already
    seen.clear()
    CMCL(**kw, rotate_every=2, refit_dag=False, num_threads=1).fit(images, u)
    assert seen == [1]  # without the refit, the jointly learnt DAG is kept: no reset at the end
