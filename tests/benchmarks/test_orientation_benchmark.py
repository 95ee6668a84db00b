"""benchmarks/orientation.py runs end to end and writes its tables."""

from __future__ import annotations

import json

from benchmarks import orientation


def test_orientation_benchmark_writes_json_and_markdown(tmp_path) -> None:
    argv = ["--settings", "4/10", "--seeds", "0", "--n", "300", "--out", str(tmp_path)]
    assert orientation.main(argv) == 0
    out = json.loads((tmp_path / "orientation.json").read_text())
    (rec,) = out["records"]
    assert rec["setting"] == "4/10" and rec["shd_oriented"] >= 0
    # the skeleton is kept: reversals only move edges, so SHD changes by at most 1 per reversal
    assert abs(rec["shd_notears"] - rec["shd_oriented"]) <= rec["reversed"]
    md = (tmp_path / "orientation.md").read_text()
    assert "| 4/10 | 1 |" in md and "benchmarks.orientation" in md
