"""The report's pictures: which interventions a grid shows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report.figures import intervention_values


def test_intervention_values():
    assert intervention_values(np.array([0.0, 1.0, 1.0, 0.0]), "binary") == [0.0, 1.0]
    v = intervention_values(np.arange(101.0), "continuous")
    assert v == pytest.approx([5.0, 25.0, 50.0, 75.0, 95.0])
