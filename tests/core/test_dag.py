"""Tests of cmcl_core.dag and cmcl_core.acyclicity: h(W), dual ascent, the MLP pieces, learn_dag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcl_core.acyclicity import AugmentedLagrangian, h_expm, h_logdet
from cmcl_core.dag import DagConfig, NotearsMLP, learn_dag
from cmcl_core.graph import bipartite_mask, is_dag
from cmcl_core.metrics import count_accuracy
from cmcl_core.simulate import simulate

H_FUNCS = [h_expm, h_logdet]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dag_matrix(d: int, rng: np.random.Generator) -> np.ndarray:
    """Strictly upper-triangular weights under a random permutation: always a DAG."""
    W = np.triu(rng.uniform(0.1, 0.5, (d, d)), 1) * (rng.random((d, d)) < 0.5)
    perm = rng.permutation(d)
    return W[np.ix_(perm, perm)]


# ---------------------------------------------------------------- acyclicity functions


@pytest.mark.parametrize("h", H_FUNCS, ids=lambda f: f.__name__)
def test_h_is_zero_on_dag_and_positive_on_cycle(h):
    rng = np.random.default_rng(0)
    W = torch.as_tensor(_dag_matrix(6, rng))
    assert is_dag(W.numpy())
    assert abs(float(h(W))) < 1e-10
    W_cyc = W.clone()
    W_cyc[1, 0], W_cyc[0, 1] = 0.5, 0.5  # a 2-cycle 0 <-> 1
    assert float(h(W_cyc)) > 1e-3
    W_self = torch.zeros(3, 3, dtype=torch.float64)
    W_self[2, 2] = 0.4  # a self-loop is a cycle too
    assert float(h(W_self)) > 1e-3


@pytest.mark.parametrize("h", H_FUNCS, ids=lambda f: f.__name__)
def test_h_gradient_matches_finite_differences(h):
    gen = torch.Generator().manual_seed(1)
    W = (0.3 * torch.rand(5, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(h, (W,), eps=1e-6, atol=1e-6)


def test_h_expm_matches_scipy_expm():
    from scipy.linalg import expm

    W = np.random.default_rng(2).uniform(-0.6, 0.6, (7, 7))
    expected = np.trace(expm(W * W)) - 7
    assert float(h_expm(torch.as_tensor(W))) == pytest.approx(expected, rel=1e-10)


def test_h_logdet_flags_leaving_its_domain():
    """Inside DAGMA's M-matrix domain (spectral radius of W o W below s) h is finite and >= 0;
    where det(sI - W o W) <= 0 it is +inf; learn_dag rejects such steps (h < 0 or inf)."""
    cyc = torch.zeros(3, 3, dtype=torch.float64)
    cyc[0, 1] = cyc[1, 2] = cyc[2, 0] = 0.9  # a 3-cycle, spectral radius 0.9^(2/3)... < 1
    inside = float(h_logdet(cyc, s=1.0))
    assert np.isfinite(inside) and inside > 0  # a cycle: positive, finite
    assert float(h_logdet(0.5 * torch.triu(torch.ones(3, 3, dtype=torch.float64), 1))) == 0.0
    two = torch.tensor([[0.0, 1.2], [1.2, 0.0]], dtype=torch.float64)  # W o W: eigenvalues +-1.44
    assert float(h_logdet(two, s=1.0)) == float("inf")  # det(I - A) = 1 - 1.44^2 < 0
    assert np.isfinite(float(h_logdet(two, s=2.0)))  # a larger s takes it back inside


def test_augmented_lagrangian_follows_the_notears_schedule():
    al = AugmentedLagrangian(rho_init=1.0, rho_mult=10.0, rho_max=1e3, h_shrink=0.25)
    h = torch.tensor(0.5)
    assert float(al.penalty(h)) == pytest.approx(0.5 * 0.25)  # alpha = 0 at the start
    assert not al.too_slow(1e9)  # nothing accepted yet: any h counts as progress
    al.ascend(0.5)
    assert (al.rho, al.alpha, al.h) == (1.0, 0.5, 0.5)
    assert not al.too_slow(0.1) and al.too_slow(0.2)  # 0.25 * 0.5 = 0.125
    al.update(0.2)  # too slow: rho x 10, then alpha += rho h
    assert al.rho == 10.0 and al.alpha == pytest.approx(0.5 + 10.0 * 0.2)
    for _ in range(5):
        al.raise_rho()
    assert al.rho == 1e3  # capped
    al.reset()
    assert (al.rho, al.alpha, al.h) == (1.0, 0.0, float("inf"))


# ---------------------------------------------------------------- the MLP pieces


def test_notears_mlp_shapes_mask_and_penalties():
    types = ["continuous", "binary", "categorical", "continuous"]
    allowed = np.ones((4, 4), dtype=bool)
    allowed[0, 3] = False
    torch.manual_seed(0)
    model = NotearsMLP(types, hidden=(6, 5), allowed=allowed, n_levels=[1, 2, 3, 1]).double()
    n = 50
    X = torch.randn(n, 4, dtype=torch.float64)
    X[:, 1] = (X[:, 1] > 0).double()
    X[:, 2] = torch.randint(0, 3, (n,)).double()
    pred = model(X)
    assert pred.shape == (n, 1 + 1 + 3 + 1)
    W = model.adjacency()
    assert W.shape == (4, 4)
    assert torch.all(torch.diagonal(W) == 0) and W[0, 3] == 0 and W[1, 2] > 0
    loss = model.loss(X, pred)
    assert torch.isfinite(loss) and loss > 0
    assert torch.allclose(loss, model.loss(X))
    total = loss + model.l1_penalty() + model.l2_penalty() + model.acyclicity("expm")
    total.backward()
    g = model.fc1.weight.grad.view(4, 6, -1)  # [j, h1, D_in]; D_in columns: 0 | 1 | 2,3,4 | 5
    assert torch.all(g[3, :, 0] == 0)  # 0 -> 3 forbidden
    assert torch.all(g[2, :, 2:5] == 0)  # no self-loop on the categorical one-hot group
    assert torch.all(g[0, :, 0] == 0)
    assert g[3, :, 1].abs().sum() > 0
    assert W.requires_grad


def test_notears_mlp_output_of_j_ignores_input_j():
    torch.manual_seed(0)
    model = NotearsMLP(["continuous"] * 3, hidden=(4, 4, 4)).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    X2 = X.clone()
    X2[:, 1] += 5.0
    out1, out2 = model(X), model(X2)
    assert torch.allclose(out1[:, 1], out2[:, 1])
    assert not torch.allclose(out1[:, 0], out2[:, 0])


def test_notears_mlp_binary_loss_is_bce():
    model = NotearsMLP(["binary", "continuous"], hidden=(3,)).double()
    X = torch.tensor([[0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    pred = torch.tensor([[0.3, 0.5], [-0.2, -0.5]], dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred[:, 0], X[:, 0])
    mse = 0.5 * ((pred[:, 1] - X[:, 1]) ** 2).mean()
    assert float(model.loss(X, pred)) == pytest.approx(float(bce + mse))


# ---------------------------------------------------------------- learn_dag validation


@pytest.mark.parametrize(
    ("X", "types", "match"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]]), None, "NaN"),
        (np.zeros(5), None, "2-D"),
        (np.random.default_rng(0).normal(size=(5, 2)), ["continuous"], "one type per column"),
        (np.random.default_rng(0).normal(size=(5, 2)), ["continuous", "ordinal"], "unknown"),
        (np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 3.0]]), ["binary", "continuous"], "0/1"),
        (np.array([[0.5, 1.0], [2.0, 2.0], [1.0, 3.0]]), ["categorical", "continuous"], "codes"),
        (np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]), None, "constant"),
    ],
)
def test_learn_dag_validates_inputs(X, types, match):
    with pytest.raises(ValueError, match=match):
        learn_dag(X, types)


def test_learn_dag_rejects_unknown_hyperparameter_and_bad_mask():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(TypeError, match="lambda_one"):
        learn_dag(X, lambda_one=0.1)
    with pytest.raises(ValueError, match="allowed"):
        learn_dag(X, allowed=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="acyclicity"):
        DagConfig(acyclicity="spectral")


# ---------------------------------------------------------------- structure recovery


def _binary_child_data(n: int, seed: int) -> np.ndarray:
    """z -> u (binary, logistic link of a nonlinear f(z)), plus an independent continuous x."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    logit = 4.0 * np.tanh(2.0 * z) + 1.5 * np.sin(3.0 * z)  # nonlinear, strong
    u = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    x = rng.normal(size=n)
    return np.column_stack([z, u, x])


def test_binary_child_is_recovered_through_logistic_link():
    X = _binary_child_data(1000, seed=0)
    W = learn_dag(X, ["continuous", "binary", "continuous"], seed=0)
    B_true = np.zeros((3, 3), dtype=int)
    B_true[0, 1] = 1
    assert count_accuracy(B_true, W != 0)["shd"] == 0, W
    assert np.all(np.diag(W) == 0)


def test_l1_weight_of_a_child_follows_its_link_curvature():
    model = NotearsMLP(["continuous", "binary", "categorical"], hidden=(4,), n_levels=[1, 2, 3])
    torch.testing.assert_close(model.l1_scale.flatten(), torch.tensor([1.0, 0.25, 2.0 / 9.0]))
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
    w = model.fc1_weight().abs().sum((1, 2))  # [p]: unweighted L1 of each child's inputs
    torch.testing.assert_close(model.l1_penalty(), (w * model.l1_scale.flatten()).sum())


def test_moderate_binary_effect_survives_the_l1_penalty():
    # z -> u with a moderate logistic effect; under an unscaled L1 weight of 0.05 the log-loss's
    # 1/4 curvature made NOTEARS drop such edges (see NotearsMLP.l1_scale). Only the skeleton is
    # checked: a binary cause and a continuous effect with Gaussian noise fit both directions
    # (the logistic is the exact posterior of a two-Gaussian mixture).
    rng = np.random.default_rng(1)
    z = rng.normal(size=1000)
    u = (rng.random(1000) < 1.0 / (1.0 + np.exp(-(1.5 * z + 0.5 * z**2 - 0.5)))).astype(float)
    X = np.column_stack([u, z, rng.normal(size=1000)])
    for lam in (0.01, 0.05):
        W = learn_dag(X, ["binary", "continuous", "continuous"], seed=0, lambda1=lam)
        assert (W[1, 0] != 0 or W[0, 1] != 0) and np.count_nonzero(W) == 1, (lam, W)


def test_allowed_mask_is_respected_and_learn_dag_is_deterministic():
    X = _binary_child_data(500, seed=1)
    types = ["continuous", "binary", "continuous"]
    allowed = np.ones((3, 3), dtype=bool)
    allowed[0, 1] = allowed[1, 0] = False  # forbid the true edge in both directions
    W = learn_dag(X, types, allowed=allowed, seed=3)
    assert W[0, 1] == 0 and W[1, 0] == 0 and np.all(np.diag(W) == 0)
    assert is_dag(W)
    W2 = learn_dag(X, types, allowed=allowed, seed=3)
    np.testing.assert_array_equal(W, W2)


def _recover(d: int, n_edges: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    sim = simulate(d, d, n_edges, n=1000, image_size=8, n_binary=1, seed=seed)
    W = learn_dag(sim.uz, sim.var_types, allowed=bipartite_mask(d, d), seed=seed)
    return sim.B_true, W


def test_recovers_small_bipartite_graph():
    B_true, W = _recover(2, 2, seed=0)
    assert is_dag(W) and np.all(np.diag(W) == 0)
    assert count_accuracy(B_true, W != 0)["shd"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_bipartite_graph_5u_5z(seed):
    """The issue's setting: 5 u + 5 z, 4 edges, n = 1000, one binary u; SHD <= 1, the binary
    u's edge compared as an adjacency (its direction is not identifiable: docs/method.md)."""
    B_true, W = _recover(5, 4, seed=seed)
    assert is_dag(W)
    assert not np.any(W[:5, :5]) and not np.any(W[5:, 5:])  # bipartite mask respected
    T, E = B_true != 0, W != 0
    binary = np.zeros(10, dtype=bool)
    binary[0] = True  # simulate's first n_binary columns
    touches = binary[:, None] | binary[None, :]
    skeleton_errors = np.triu((T | T.T) != (E | E.T)).sum()
    reversed_ = (T & E.T & ~touches).sum()
    assert skeleton_errors + reversed_ <= 1, (skeleton_errors, reversed_)


@pytest.mark.slow
def test_logdet_option_finds_the_skeleton_and_returns_a_dag():
    X = _binary_child_data(1000, seed=0)
    W = learn_dag(X, ["continuous", "binary", "continuous"], seed=0, acyclicity="logdet")
    assert is_dag(W) and np.all(np.diag(W) == 0)
    skeleton = (W != 0) | (W.T != 0)
    expected = np.zeros((3, 3), dtype=bool)
    expected[0, 1] = expected[1, 0] = True
    np.testing.assert_array_equal(skeleton, expected)


@pytest.mark.gpu
def test_learn_dag_and_h_run_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    W = torch.rand(6, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    for h in H_FUNCS:
        (grad,) = torch.autograd.grad(h(0.3 * W), W)
        assert grad.is_cuda and torch.isfinite(grad).all()
    X = _binary_child_data(1000, seed=0)
    W_gpu = learn_dag(X, ["continuous", "binary", "continuous"], seed=0, device="cuda")
    assert is_dag(W_gpu) and W_gpu[0, 1] != 0
