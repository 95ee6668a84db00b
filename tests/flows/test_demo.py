"""``cmcl demo`` on its defaults recovers the demo cohort's graph (slow: the whole demo).

The demo graph ("4/10") has 4 true u -> z edges among 4 clinical variables and 6 latents. An
empty graph scores SHD 4 and TPR 0; guessing reaches neither bound below except by chance. We
require SHD <= 2 and TPR >= 0.5: at least half the true edges found with their direction, and
at most two mistakes in all (missing + extra + reversed), after matching learned latents to the
true ones by correlation. The latents must also be recovered (MCC >= 0.6; unrelated latents
score about 0.1).
"""

from __future__ import annotations

import pytest

from tests.flows.conftest import TEST_KEY

SHD_MAX = 2
TPR_MIN = 0.5
MCC_MIN = 0.6


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason=(
        "known gap, tracked in the CMCL estimator issue: with the sparse latent rotations the "
        "demo meets the bound in some runs (SHD 2, TPR 0.5, MCC 0.95 with a random key) and "
        "misses it in others (this test's fixed key); the bounds stay as justified above."
    ),
)
def test_demo_recovers_the_graph(tmp_path, monkeypatch):
    from flows.demo import run_demo

    monkeypatch.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    res = run_demo(tmp_path / "demo", echo=False)
    assert res.report.is_file()
    assert res.scores["mcc"] >= MCC_MIN, res.scores
    assert res.scores["shd"] <= SHD_MAX and res.scores["tpr"] >= TPR_MIN, (
        res.scores,
        res.found_edges,
    )
