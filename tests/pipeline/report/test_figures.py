"""The report's pictures: which interventions a grid shows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report.figures import intervention_values


def test_intervention_values():
    assert intervention_values(np.array([0.0, 1.0, 1.0, 0.0]), "binary") == [0.0, 1.0]
    v = intervention_values(np.arange(101.0), "continuous")
    assert v == pytest.approx([5.0, 25.0, 50.0, 75.0, 95.0])


@pytest.fixture(scope="module")
def tiny_model():
    from cmcl_core.edges import Stability
    from cmcl_core.estimator import CMCL

    rng = np.random.default_rng(0)
    images = rng.random((64, 1, 16, 16)).astype(np.float32)
    u = np.column_stack([rng.integers(0, 2, 64), rng.normal(size=64)]).astype(float)
    model = CMCL(latent_dim=2, seed=0, device="cpu", epochs=2, min_epochs=2, batch_size=16,
                 num_threads=1, refit_dag=False)  # fmt: skip
    model.fit(images, u, ["binary", "continuous"], ["covid_status_at_admission", "age"],
              u_roles={"age": "cause"})  # fmt: skip
    W = np.zeros((4, 4))
    W[0, 2], W[1, 3] = 0.9, 0.7  # covid -> z0 (undetermined), age -> z1 (knowledge)
    model.weighted_adjacency_ = W
    graphs = np.stack([W, W, W, W.T])
    model.set_stability(Stability.from_graphs(graphs, "dag"))
    return model, images, u


def test_report_shows_orientation_stability_traversals_and_training(tiny_model, tmp_path):
    from pipeline.report.page import write_report

    model, images, u = tiny_model
    index = write_report(tmp_path, run_id=3, model=model, images=images, u=u, metrics={"a": 1})
    html = index.read_text()
    for name in ("dag.png", "traversals.png", "training.png", "saliency/z0.png",
                 "saliency/z1.png", "interventions/age__z1.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 1000, name
    assert "<td>undetermined</td><td>1.00</td><td>0.75</td>" in html  # covid -> z0
    assert "<td>knowledge</td><td>1.00</td><td>0.75</td>" in html  # age -> z1
    assert "covid_status_at_admission" in html  # full names, never truncated


def test_graph_picture_keeps_long_labels(tiny_model, tmp_path):
    """The saved figure is cropped to what it draws (bbox_inches="tight"), so a long name
    widens the picture rather than being cut off at its edge."""
    from PIL import Image

    from cmcl_core.edges import Edge, Orientation
    from pipeline.report.figures import draw_dag

    def picture(name: str, path) -> tuple[int, int]:
        edges = [Edge(name, "z0", 0.9, Orientation.UNDETERMINED, 1.0, 0.75),
                 Edge("age", "z1", 0.7, Orientation.KNOWLEDGE)]  # fmt: skip
        return Image.open(draw_dag(edges, [name, "age"], 2, {"age": "cause"}, path)).size

    short = picture("a", tmp_path / "short.png")
    long = picture("covid_status_at_admission_" * 3, tmp_path / "long.png")
    assert long[0] > short[0] + 100


def test_report_lists_a_latent_on_no_edge_as_a_nuisance_factor(tiny_model, tmp_path):
    import copy

    from cmcl_core.edges import LatentRole
    from pipeline.report.page import write_report

    model, images, u = tiny_model
    model = copy.deepcopy(model)
    W = np.zeros((4, 4))
    W[1, 2] = 0.7  # age -> z0 only: z1 is tied to no clinical variable
    model.weighted_adjacency_ = W
    model.image_effect_ = np.array([2.0, 1.8])  # image change per sd of each latent
    model.set_stability(None)
    assert model.latent_roles_ == {"z0": LatentRole.CLINICAL, "z1": LatentRole.NUISANCE}
    html = write_report(tmp_path, run_id=4, model=model, images=images, u=u, metrics={}).read_text()
    assert "<td>z1</td><td>nuisance</td><td>0.90</td>" in html  # share of the largest effect
    assert "<td>z0</td><td>clinical</td><td>1.00</td>" in html
    assert "Every latent shapes the image" in html  # none unused: latent_dim may be too small
    model.image_effect_ = np.array([2.0, 0.1])
    model.set_stability(None)
    assert model.latent_roles_["z1"] is LatentRole.UNUSED
    html = write_report(tmp_path, run_id=5, model=model, images=images, u=u, metrics={}).read_text()
    assert "<td>z1</td><td>unused</td><td>0.05</td>" in html
    assert "Every latent shapes the image" not in html
