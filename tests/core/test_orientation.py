"""Likelihood re-orientation of NOTEARS edges (cmcl_core.orientation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcl_core.dag import NotearsMLP
from cmcl_core.graph import bipartite_mask, is_dag
from cmcl_core.orientation import local_scores, orient_edges


def anm_pairs(n: int = 600, seed: int = 0) -> np.ndarray:
    """Two independent additive-noise pairs: x0 -> x1 and x3 -> x2 (columns 0-3)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    x1 = 2.0 * np.tanh(1.5 * x0) + 0.4 * rng.normal(size=n)
    x3 = rng.normal(size=n)
    x2 = x3**2 / 2 + np.sin(2 * x3) + 0.4 * rng.normal(size=n)
    return np.stack([x0, x1, x2, x3], 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_reversed_edges_are_turned_round_and_right_ones_kept(seed):
    X = anm_pairs(seed=seed)
    W = np.zeros((4, 4))
    W[1, 0] = 0.9  # wrong: the truth is 0 -> 1
    W[3, 2] = 1.2  # right
    out = orient_edges(X, W, seed=seed)
    assert out[0, 1] == pytest.approx(0.9) and out[1, 0] == 0  # reversed, weight kept
    assert out[3, 2] == pytest.approx(1.2) and out[2, 3] == 0  # kept
    assert ((out != 0) | (out.T != 0)).sum() == ((W != 0) | (W.T != 0)).sum()  # same skeleton


def test_a_reversal_must_be_allowed():
    X = anm_pairs()
    W = np.zeros((4, 4))
    W[1, 0] = 0.9
    allowed = np.ones((4, 4), dtype=bool)
    allowed[0, 1] = False  # 0 -> 1 forbidden: the wrong edge has to stay
    np.testing.assert_array_equal(orient_edges(X, W, allowed=allowed), W)


def test_a_reversed_chain_is_turned_round_over_passes():
    # truth a -> b -> c; given c -> b -> a. The two reversals share node b, so one pass may
    # make only one of them (its scores are stale after the first): the second pass does the
    # other, and every intermediate graph is acyclic.
    rng = np.random.default_rng(0)
    a = rng.normal(size=600)
    b = np.tanh(2 * a) + 0.3 * rng.normal(size=600)
    c = np.tanh(2 * b) + 0.3 * rng.normal(size=600)
    X = np.stack([a, b, c], 1)
    W = np.zeros((3, 3))
    W[2, 1], W[1, 0] = 1.0, 1.0
    out = orient_edges(X, W)
    assert (out != 0).sum() == 2 and out[0, 1] != 0 and out[1, 2] != 0
    one = orient_edges(X, W, max_passes=1) != 0
    assert one.sum() == 2 and (one & (W != 0)).sum() == 1  # one pass: one reversal
    assert is_dag(one)


def test_local_scores_fit_each_child_on_its_parents():
    X = torch.as_tensor(anm_pairs(), dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0)
    regs = [(1, frozenset()), (1, frozenset({0})), (1, frozenset({0, 2}))]
    s = local_scores(X, ["continuous"] * 4, [1] * 4, regs)
    # no parent: 0.5 log(var) = 0 for a standardised column; the true parent explains most of it
    assert s[regs[0]] == pytest.approx(0.0, abs=1e-3)
    assert s[regs[1]] < -0.5
    assert s[regs[2]] <= s[regs[1]] + 0.01  # an irrelevant extra parent does not hurt much


def test_link_losses_sum_to_the_link_loss_and_log_mse_is_a_likelihood():
    torch.manual_seed(0)
    types = ["continuous", "binary", "categorical"]
    model = NotearsMLP(types, (5,), n_levels=[1, 2, 3]).double()
    X = torch.stack(
        [torch.randn(50), torch.randint(0, 2, (50,)).double(), torch.randint(0, 3, (50,)).double()],
        1,
    ).double()
    parts = model.link_losses(X)
    assert parts.shape == (3,)
    torch.testing.assert_close(parts.sum(), model.loss(X))
    logs = model.link_losses(X, log_mse=True)
    torch.testing.assert_close(logs[1:], parts[1:])  # discrete terms are log-losses already
    torch.testing.assert_close(logs[0], 0.5 * torch.log(2 * parts[0]))


def test_orient_edges_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="W must be"):
        orient_edges(anm_pairs(), np.zeros((3, 3)))


def test_u_z_reversals_follow_the_data_and_the_mask():
    """On the bipartite mask a wrong u-z edge is turned round (its reverse is allowed) and a
    right one kept; where a role forbids the reverse (u0 a cause: no incoming edge), the edge
    into u0 must stay as given even though the data favour the other way."""
    X = anm_pairs()  # x0 -> x1 and x3 -> x2; take u = (x0, x2), z = (x1, x3)
    X = X[:, [0, 2, 1, 3]]  # columns u0 = x0, u1 = x2, z0 = x1, z1 = x3
    W = np.zeros((4, 4))
    W[2, 0] = 0.9  # z0 -> u0: wrong (truth u0 -> z0)
    W[3, 1] = 1.1  # z1 -> u1: right
    mask = bipartite_mask(2, 2)
    out = orient_edges(X, W, allowed=mask)
    assert out[0, 2] == pytest.approx(0.9) and out[2, 0] == 0  # a u-z reversal, allowed
    assert out[3, 1] == pytest.approx(1.1) and out[1, 3] == 0
    forbid = mask.copy()
    forbid[0, 2] = False  # u0 -> z0 ruled out (u0 an effect): the wrong edge has to stay
    np.testing.assert_array_equal(orient_edges(X, W, allowed=forbid), W)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_binary_effect_of_a_latent_stays_an_effect(seed):
    """A steep logistic child: with NOTEARS' L2 weight (0.01) the shrunk logistic fit made
    seed 2 reverse this right edge (the demo's z -> covid); the default 1e-3 keeps it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=600)
    u = rng.binomial(1, 1 / (1 + np.exp(-(3 * np.tanh(2 * z) + z)))).astype(float)
    W = np.zeros((2, 2))
    W[1, 0] = 1.0  # z -> u, the truth
    kw = dict(var_types=["binary", "continuous"], continuous_only=False)
    out = orient_edges(np.stack([u, z], 1), W, **kw)
    assert out[1, 0] != 0 and out[0, 1] == 0


def test_mixed_type_edges_are_left_to_notears_by_default():
    rng = np.random.default_rng(2)
    z = rng.normal(size=600)
    u = rng.binomial(1, 1 / (1 + np.exp(-(3 * np.tanh(2 * z) + z)))).astype(float)
    W = np.zeros((2, 2))
    W[0, 1] = 1.0  # u -> z, reversed: not a candidate unless continuous_only=False
    X = np.stack([u, z], 1)
    np.testing.assert_array_equal(orient_edges(X, W, ["binary", "continuous"]), W)
    assert orient_edges(X, W, ["binary", "continuous"], continuous_only=False)[1, 0] != 0
