"""Tests of cmcl_core.graph: cycles, topological order, thresholding, masks, edge lists."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cmcl_core.graph import (
    bipartite_mask,
    edge_list,
    find_cycle,
    is_dag,
    node_names,
    threshold_dag,
    topological_order,
)


def test_find_cycle_and_is_dag():
    B = np.zeros((4, 4), dtype=int)
    B[0, 1] = B[1, 2] = B[2, 3] = 1
    assert find_cycle(B) is None and is_dag(B)
    B[3, 1] = 1  # 1 -> 2 -> 3 -> 1
    cycle = find_cycle(B)
    assert sorted(cycle) == [1, 2, 3] and not is_dag(B)
    assert all(B[a, b] for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))


def test_topological_order_puts_parents_first_and_rejects_cycles():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = int(rng.integers(2, 9))
        perm = rng.permutation(d)
        B = (np.triu(rng.random((d, d)), 1) > 0.5)[np.ix_(perm, perm)]
        order = topological_order(B)
        pos = {k: i for i, k in enumerate(order)}
        assert sorted(order) == list(range(d))
        assert all(pos[i] < pos[j] for i, j in zip(*np.nonzero(B), strict=True))
    with pytest.raises(ValueError, match="cycle"):
        topological_order(np.array([[0, 1], [1, 0]]))


def test_edge_list_names_and_orders_by_strength():
    W = np.zeros((3, 3))
    W[0, 2], W[2, 1] = 0.4, -0.9
    names = node_names(["covid", "age"], 1)
    assert names == ["covid", "age", "z0"]
    assert edge_list(W, names) == [("z0", "age", -0.9), ("covid", "z0", 0.4)]


# ---------------------------------------------------------------- thresholding and masks


def test_threshold_dag_breaks_cycles_at_weakest_edge(caplog):
    W = np.zeros((3, 3))
    W[0, 1], W[1, 2], W[2, 0] = 0.9, 0.8, 0.5  # cycle 0 -> 1 -> 2 -> 0, weakest 2 -> 0
    W[0, 2] = 0.1  # below the threshold
    with caplog.at_level(logging.INFO, logger="cmcl_core.graph"):
        out = threshold_dag(W, 0.3)
    assert is_dag(out)
    assert out[2, 0] == 0 and out[0, 1] == 0.9 and out[1, 2] == 0.8 and out[0, 2] == 0
    assert any("2 -> 0" in r.getMessage() for r in caplog.records)
    assert W[2, 0] == 0.5  # the input is not modified


@pytest.mark.parametrize("seed", range(20))
def test_threshold_dag_of_random_dense_matrix_is_a_dag(seed):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 15))
    W = rng.normal(size=(d, d))
    out = threshold_dag(W, float(rng.uniform(0, 1)))
    assert is_dag(out)
    assert np.all(np.diag(out) == 0)
    kept = out != 0
    assert np.all(out[kept] == W[kept])  # surviving edges keep their weights


def test_threshold_dag_hypothesis():
    hyp = pytest.importorskip("hypothesis")
    from hypothesis.extra.numpy import arrays

    st = hyp.strategies

    @hyp.given(
        arrays(np.float64, st.tuples(st.integers(1, 8), st.just(8)), elements=st.floats(-2, 2)),
        st.floats(0, 1.5),
    )
    @hyp.settings(max_examples=60, deadline=None)
    def check(block, thr):
        d = block.shape[0]
        out = threshold_dag(block[:, :d], thr)
        assert find_cycle(out) is None
        assert np.all(np.abs(out[out != 0]) >= thr)

    check()


def test_threshold_dag_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        threshold_dag(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        threshold_dag(np.full((2, 2), np.nan))


def test_bipartite_mask():
    M = bipartite_mask(2, 3)
    assert M.shape == (5, 5) and M.dtype == bool
    assert not M[:2, :2].any() and not M[2:, 2:].any()
    assert M[:2, 2:].all() and M[2:, :2].all()
