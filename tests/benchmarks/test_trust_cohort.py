"""The chest X-ray / brain cohort benchmark's scoring of found edges against the truth."""

from __future__ import annotations

from benchmarks.trust_cohort import latent_links, skeleton_shd

TRUE = [("covid", "z0"), ("z1", "fev1")]
LATENTS = {"z0", "z1", "z2"}


def _row(source: str, target: str, weight: float = 1.0) -> dict:
    return {"source": source, "target": target, "weight": weight}


def test_skeleton_shd_ignores_direction_and_counts_misses_and_extras() -> None:
    assert skeleton_shd(TRUE, [_row("z0", "covid"), _row("z1", "fev1")], LATENTS) == 0
    assert skeleton_shd(TRUE, [_row("covid", "z0")], LATENTS) == 1  # z1 - fev1 missed
    extra = [_row("covid", "z0"), _row("z1", "fev1"), _row("z2", "covid")]
    assert skeleton_shd(TRUE, extra, LATENTS) == 1
    # a row only the resamples have (weight 0) is no adjacency of the learned graph
    assert skeleton_shd(TRUE, [*extra[:2], _row("z2", "covid", 0.0)], LATENTS) == 0


def test_latent_links_are_counted_apart_from_the_skeleton() -> None:
    rows = [
        _row("covid", "z0"),
        _row("z1", "fev1"),
        _row("z0", "z1"),
        _row("z2", "unmatched:z3"),  # a spare latent is a latent too
        _row("unmatched:z3", "covid"),  # but its edge to a clinical variable is spurious
    ]
    assert skeleton_shd(TRUE, rows, LATENTS) == 1
    assert latent_links(rows, LATENTS, confounded={"z0", "z1"}) == (2, 1)
    assert latent_links(rows, LATENTS, confounded=set()) == (2, 0)
