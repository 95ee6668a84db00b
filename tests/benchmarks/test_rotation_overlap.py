"""benchmarks/rotation_overlap.py: the sparse rotation on the true renderer."""

from __future__ import annotations

import json

from benchmarks import rotation_overlap


def test_separate_latents_are_kept_and_wide_footprints_are_mixed(tmp_path) -> None:
    """Started at the truth, the search stays there when each latent has its own cell, and
    leaves it for a sparser mixed basis when the footprints are 1.5 cells wide."""
    argv = ["--widths", "0", "1.5", "--layouts", "1", "--n", "300", "--image-size", "16",
            "--restarts", "1", "--out", str(tmp_path)]  # fmt: skip
    assert rotation_overlap.main(argv) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    separate, wide = summary
    assert (separate["overlap"], wide["overlap"]) == (0.0, 1.5)
    assert separate["orthogonal_mcc"][0] > 0.98 and separate["oblique_mcc"][0] > 0.98
    assert wide["orthogonal_l1_ratio"][2] < 0.95  # the criterion prefers a mixed basis
    assert wide["orthogonal_mcc"][2] < 0.9
    assert "| 6 | 1.5 | 1 |" in (tmp_path / "results.md").read_text()
