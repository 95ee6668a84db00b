"""Tests of cmcl_core.edges: knowledge masks, orientation status, stability, the edge table."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core.edges import (
    MIN_DIRECTION_AGREEMENT,
    Edge,
    LatentRole,
    Orientation,
    Stability,
    edge_table,
    knowledge_mask,
    latent_roles,
    orientation_of,
)

TYPES = ["binary", "continuous", "binary", "continuous", "continuous"]  # u0..u2, z0, z1
NAMES = ["covid", "age", "icu", "z0", "z1"]


def test_knowledge_mask_forbids_edges_into_causes_and_out_of_effects():
    K = knowledge_mask(3, 2, {0: "cause", 2: "effect"})
    assert K.shape == (5, 5) and not K.diagonal().any()
    assert not K[:, 0].any() and K[0, 1:].all()  # a cause: no parent, any child
    assert not K[2, :].any() and K[[0, 1, 3, 4], 2].all()  # an effect: no child, any parent
    assert K[1, 3] and K[3, 1]  # no role: both directions
    with pytest.raises(ValueError):
        knowledge_mask(1, 1, {0: "mediator"})


def test_orientation_status_of_each_kind():
    K = knowledge_mask(3, 2, {0: "cause", 2: "effect"})
    assert orientation_of(0, 3, TYPES, K, None) is Orientation.KNOWLEDGE  # covid -> z0
    assert orientation_of(4, 2, TYPES, K, None) is Orientation.KNOWLEDGE  # z1 -> icu
    assert orientation_of(1, 3, TYPES, K, None) is Orientation.DATA  # age -> z0, continuous
    assert orientation_of(1, 3, TYPES, K, 0.9) is Orientation.DATA
    agree = MIN_DIRECTION_AGREEMENT - 0.05  # resamples disagree
    assert orientation_of(1, 3, TYPES, K, agree) is Orientation.UNDETERMINED
    K0 = knowledge_mask(3, 2, {})
    assert orientation_of(0, 3, TYPES, K0, 1.0) is Orientation.UNDETERMINED  # binary, no role
    assert orientation_of(3, 0, TYPES, K0, 1.0) is Orientation.UNDETERMINED  # either way


def test_stability_frequencies_from_graphs():
    g = np.zeros((4, 5, 5))
    g[:, 1, 3] = 0.5  # age -> z0 in all four
    g[:3, 0, 4] = 1.0  # covid -> z1 in three ...
    g[3, 4, 0] = 2.0  # ... and reversed in the fourth
    g[0, 2, 3] = 0.4  # icu - z0 in one
    s = Stability.from_graphs(g, "dag")
    assert s.resamples == 4 and s.level == "dag"
    assert s.adjacency[1, 3] == s.adjacency[3, 1] == 1.0
    assert s.adjacency[0, 4] == 1.0 and s.agreement(0, 4) == 0.75 and s.agreement(4, 0) == 0.25
    assert s.adjacency[2, 3] == 0.25
    assert s.weight[0, 4] == 1.0 and s.weight[4, 0] == 2.0
    assert s.agreement(1, 2) == 0.0  # never adjacent


def test_edge_table_rows_and_claims():
    W = np.zeros((5, 5))
    W[1, 3], W[0, 4] = 0.8, 1.2
    K = knowledge_mask(3, 2, {})
    rows = edge_table(W, NAMES, TYPES, K)
    assert [(e.source, e.target) for e in rows] == [("covid", "z1"), ("age", "z0")]
    assert [e.orientation for e in rows] == [Orientation.UNDETERMINED, Orientation.DATA]
    assert rows[0].stability is None and not rows[0].is_claim and rows[1].is_claim
    g = np.zeros((10, 5, 5))
    g[:, 1, 3] = 0.8
    g[:6, 0, 4] = 1.0
    g[:5, 2, 4] = 0.5  # icu - z1 in half the resamples, absent from the reference fit
    g[5:, 4, 2] = 0.5
    g[:4, 0, 3] = 0.5  # covid - z0 in fewer than half: no row
    rows = edge_table(W, NAMES, TYPES, K, Stability.from_graphs(g, "dag"))
    by = {(e.source, e.target): e for e in rows}
    assert set(by) == {("covid", "z1"), ("age", "z0"), ("icu", "z1")}
    assert by[("age", "z0")].stability == 1.0 and by[("age", "z0")].direction_agreement == 1.0
    assert by[("covid", "z1")].stability == 0.6
    assert by[("icu", "z1")].weight == 0.0 and by[("icu", "z1")].stability == 1.0
    assert by[("icu", "z1")].direction_agreement == 0.5
    assert by[("icu", "z1")].orientation is Orientation.UNDETERMINED


def test_latent_roles_name_nuisance_and_unused_latents():
    edges = [
        Edge("covid", "z0", 1.2, Orientation.KNOWLEDGE, 1.0, 1.0),
        Edge("z1", "age", 0.0, Orientation.UNDETERMINED, 0.6, 0.5),  # resamples only, >= half
        Edge("z2", "icu", 0.4, Orientation.DATA, 0.3, 1.0),  # unstable: ties z2 to nothing
    ]
    roles = latent_roles(edges, ["z0", "z1", "z2", "z3"], [1.0, 0.8, 0.9, 0.05])
    assert roles == {
        "z0": LatentRole.CLINICAL,
        "z1": LatentRole.CLINICAL,
        "z2": LatentRole.NUISANCE,
        "z3": LatentRole.UNUSED,
    }
    # without resampling every row of the reference fit counts
    no_resampling = [Edge("z2", "icu", 0.4, Orientation.DATA)]
    assert latent_roles(no_resampling, ["z2"], [1.0]) == {"z2": LatentRole.CLINICAL}


def test_an_edge_between_latents_is_undetermined_and_ties_no_latent_to_the_clinic():
    W = np.zeros((5, 5))
    W[3, 4], W[1, 3] = 0.9, 0.8  # z0 -> z1 (latent_edges), age -> z0
    rows = edge_table(W, NAMES, TYPES, knowledge_mask(3, 2, {}), n_clinical=3)
    by = {(e.source, e.target): e for e in rows}
    assert by[("z0", "z1")].orientation is Orientation.UNDETERMINED
    assert by[("age", "z0")].orientation is Orientation.DATA
    # without n_clinical the same pair of continuous nodes would be a data claim
    plain = {(e.source, e.target): e for e in edge_table(W, NAMES, TYPES, knowledge_mask(3, 2, {}))}
    assert plain[("z0", "z1")].orientation is Orientation.DATA
    roles = latent_roles(rows, ["z0", "z1"], [1.0, 1.0])
    assert roles == {"z0": LatentRole.CLINICAL, "z1": LatentRole.NUISANCE}
