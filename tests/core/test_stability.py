"""Tests of resampled structure: the batched solver (cmcl_core.dag_batch), batched orientation,
edge stability (cmcl_core.stability) and background knowledge in the estimator."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import DagConfig, NotearsMLP, learn_dag
from cmcl_core.dag_batch import NotearsBatch, learn_dags
from cmcl_core.edges import Orientation
from cmcl_core.estimator import CMCL
from cmcl_core.graph import bipartite_mask, is_dag
from cmcl_core.orientation import orient_edges, orient_edges_batch
from cmcl_core.stability import (
    assess_stability,
    bootstrap_rows,
    chunked,
    dag_resample_graphs,
    resample_seeds,
)
from tests.core.test_estimator import FAST, two_edge_data

TYPES = ["continuous", "continuous", "continuous", "continuous", "continuous"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def known_graph(n: int = 300, seed: int = 0) -> np.ndarray:
    """[u0, u1, u2, z0, z1]: u0 -> z0 and z1 -> u1 (strong, nonlinear, additive noise); u2
    is independent of everything."""
    rng = np.random.default_rng(seed)
    u0, z1, u2 = rng.normal(size=(3, n))
    z0 = 2.0 * np.tanh(1.5 * u0) + 0.4 * rng.normal(size=n)
    u1 = 2.0 * np.tanh(1.5 * z1) + 0.4 * rng.normal(size=n)
    return np.stack([u0, u1, u2, z0, z1], 1)


def test_batch_starts_where_learn_dag_starts():
    template = NotearsMLP(TYPES, (10,), bipartite_mask(3, 2), [1] * 5)
    batch = NotearsBatch(template, [3, 7])
    for b, seed in enumerate([3, 7]):
        torch.manual_seed(seed)
        alone = NotearsMLP(TYPES, (10,), bipartite_mask(3, 2), [1] * 5)
        torch.testing.assert_close(batch.fc1_w[b].flatten(0, 1), alone.fc1.weight)
        torch.testing.assert_close(batch.lc_w[0][b], alone.lc_weights[0])
        X = torch.randn(20, 5)
        torch.testing.assert_close(batch(torch.stack([X, X]))[b], alone(X))
        torch.testing.assert_close(batch.link_losses(X.expand(2, -1, -1))[b], alone.link_losses(X))
        torch.testing.assert_close(batch.acyclicity("expm", 1.0)[b], alone.acyclicity("expm"))


def test_batched_solves_find_the_graphs_learn_dag_finds():
    X = known_graph()
    mask = bipartite_mask(3, 2)
    Xs = np.stack([X[bootstrap_rows(len(X), s)] for s in (0, 1, 2)])
    Ws = learn_dags(Xs, TYPES, mask, [0, 1, 2], DagConfig(lambda1=0.05))
    for b in range(3):
        alone = learn_dag(Xs[b], TYPES, mask, seed=b, lambda1=0.05)
        assert is_dag(Ws[b])
        np.testing.assert_array_equal(Ws[b] != 0, alone != 0)
    oriented = orient_edges_batch(Xs, Ws, TYPES, mask, seed=0)
    for b in range(3):
        np.testing.assert_array_equal(
            oriented[b] != 0, orient_edges(Xs[b], Ws[b], TYPES, mask, seed=0) != 0
        )


def test_resample_seeds_and_chunks():
    seeds = resample_seeds(5, 23)
    assert len(set(seeds)) == 23 and seeds == resample_seeds(5, 23)
    assert resample_seeds(6, 23) != seeds
    assert [len(c) for c in chunked(seeds)] == [10, 10, 3] and sum(chunked(seeds), []) == seeds
    with pytest.raises(ValueError, match="resamples"):
        resample_seeds(0, 0)


def test_stability_of_a_known_graph():
    """True adjacencies are found in (nearly) every resample; the independent u2 in few."""
    X = known_graph()
    graphs = dag_resample_graphs(
        X, TYPES, bipartite_mask(3, 2), [1] * 5, resample_seeds(0, 10), CMCLConfig()
    )
    adj = ((graphs != 0) | (graphs.transpose(0, 2, 1) != 0)).mean(0)
    assert adj[0, 3] >= 0.9 and adj[1, 4] >= 0.9
    assert adj[2].max() < 0.5
    forward = (graphs != 0).mean(0)
    assert forward[0, 3] >= 0.8 and forward[4, 1] >= 0.8  # directions by likelihood


@pytest.fixture(scope="module")
def fitted():
    images, u, _ = two_edge_data()
    return CMCL(latent_dim=2, seed=0, device="cpu", **FAST).fit(images, u), images, u


def test_assess_stability_annotates_every_edge_and_any_executor_agrees(fitted):
    model, images, u = fitted
    plain = assess_stability(model, images, u, resamples=4)
    with ThreadPoolExecutor(2) as pool:
        pooled = assess_stability(model, images, u, resamples=4, map=pool.map)
    np.testing.assert_array_equal(plain.adjacency, pooled.adjacency)
    np.testing.assert_array_equal(plain.forward, pooled.forward)
    model.set_stability(plain)
    assert {(e.source, e.target) for e in model.edge_table_} >= {(s, t) for s, t, _ in model.edges_}
    for e in model.edge_table_:
        assert 0.0 <= e.stability <= 1.0 and 0.0 <= e.direction_agreement <= 1.0
        assert model.orientation_[(e.source, e.target)] is e.orientation
    strongest = max(model.edge_table_, key=lambda e: abs(e.weight))
    assert strongest.stability == 1.0
    with pytest.raises(ValueError, match="level"):
        assess_stability(model, images, u, resamples=2, level="pixels")


def test_roles_are_hard_constraints_and_fix_the_orientation():
    images, u, _ = two_edge_data()
    # u1 is truly an effect of z1: declared an effect, its edges may only point into it
    model = CMCL(latent_dim=2, seed=0, device="cpu", **FAST).fit(
        images, u, u_roles={"u0": "cause", "u1": "effect"}
    )
    W, raw = model.weighted_adjacency_, model.raw_adjacency_
    assert not W[:, 0].any() and not raw[:, 0].any()  # nothing into the cause u0
    assert not W[1, :].any() and not raw[1, :].any()  # nothing out of the effect u1
    assert model.edges_, "the graph should keep the two true edges"
    assert all(o is Orientation.KNOWLEDGE for o in model.orientation_.values())
    assert model.u_roles_ == {"u0": "cause", "u1": "effect"}
    with pytest.raises(ValueError, match="'age'"):
        CMCL(latent_dim=2, **FAST).fit(images, u, u_roles={"age": "cause"})
    with pytest.raises(ValueError, match="'mediator'"):
        CMCL(latent_dim=2, **FAST).fit(images, u, u_roles={"u0": "mediator"})


def test_roles_and_stability_survive_save_and_load(fitted, tmp_path):
    model, images, u = fitted
    model.set_stability(assess_stability(model, images, u, resamples=2))
    model.save(str(tmp_path / "m.pt"))
    loaded = CMCL.load(str(tmp_path / "m.pt"))
    assert loaded.edge_table_ == model.edge_table_
    assert loaded.u_roles_ == model.u_roles_ and loaded.structure_data_ is None


def test_discrete_inputs_are_standardised_alike_in_the_batch_and_alone():
    types = ["binary", "categorical", "continuous", "continuous"]
    rng = np.random.default_rng(0)
    n = 200
    X = np.stack(
        [rng.integers(0, 2, n), rng.integers(0, 3, n), rng.normal(size=n), rng.normal(size=n)], 1
    ).astype(np.float64)
    mask = bipartite_mask(2, 2)
    template = NotearsMLP(types, (10,), mask, [1, 3, 1, 1])
    batch = NotearsBatch(template, [3, 7])
    Xt = torch.as_tensor(X, dtype=torch.float32)
    batch.standardise_discrete_inputs(torch.stack([Xt, Xt]))
    x_in = batch.expand_inputs(Xt.expand(2, -1, -1))[0]  # [n, 1 + 3 + 1 + 1]
    torch.testing.assert_close(x_in[:, :4].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_in[:, :4].std(0, unbiased=False), torch.ones(4))
    torch.testing.assert_close(x_in[:, 4:], Xt[:, 2:])  # continuous inputs untouched
    for b, seed in enumerate([3, 7]):
        torch.manual_seed(seed)
        alone = NotearsMLP(types, (10,), mask, [1, 3, 1, 1])
        alone.standardise_discrete_inputs(Xt)
        torch.testing.assert_close(batch(torch.stack([Xt, Xt]))[b], alone(Xt))
        # the targets keep their 0/1 and codes: the link losses agree with the model alone
        torch.testing.assert_close(
            batch.link_losses(Xt.expand(2, -1, -1))[b], alone.link_losses(Xt)
        )


@pytest.mark.slow
def test_a_binary_cause_is_found_from_every_initialisation():
    """Without standardised binary inputs, ``covid -> z0`` (covid declared a cause) was lost
    from these three initialisations: z0's MLP settled with both layers at zero."""
    from cmcl_core.simulate import simulate

    sd = simulate(5, 5, 4, n=1000, image_size=8, n_binary=3, seed=0,
                  edges=((0, 0, True), (1, 3, False), (3, 1, True), (4, 2, False)))  # fmt: skip
    X = sd.uz
    allowed = bipartite_mask(5, 5)
    allowed[:, 0] = allowed[:, 3] = False  # covid and age are causes
    allowed[1, :] = False  # icu_admission is an effect
    for seed in (3757552657, 1216546553, 2471122328):
        W = learn_dag(X, list(sd.var_types), allowed, seed=seed, lambda1=0.05)
        assert W[0, 5] > 0.3, seed
