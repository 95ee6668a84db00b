"""Scoring a run trained with ``model.align`` / ``model.intensity``: new images are
standardised and registered as in training before the ONNX encoder sees them."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core import CMCL
from pipeline.errors import DataError
from pipeline.model.artifacts import file_artifact
from pipeline.model.score import _registered

PREPARED = {"align": "similarity", "intensity": "group", "intensity_group": "site"}


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    site = rng.integers(3, size=64).astype(float)  # [n]
    images = rng.random((64, 1, 16, 16)) * (0.6 + 0.2 * site[:, None, None, None])
    u = np.column_stack([rng.normal(size=(64, 2)), site])  # [n, 3]
    model = CMCL(latent_dim=2, epochs=1, min_epochs=1, batch_size=16, seed=0, device="cpu",
                 num_threads=1, refit_dag=False, **PREPARED)  # fmt: skip
    model.fit(images.astype(np.float32), u, ["continuous", "continuous", "categorical"],
              ["a", "b", "site"])  # fmt: skip
    folder = tmp_path_factory.mktemp("run")
    model.save(str(folder / "model.pt"))
    art = {"model.pt": vars(file_artifact(folder / "model.pt", folder, "torch"))}
    return model, images.astype(np.float32), u, folder, art


def test_scoring_prepares_images_as_the_run_did(prepared_run):
    model, images, u, folder, art = prepared_run
    run = {"id": 5, "config": {"model": PREPARED}}
    got = _registered(images[:8], u[:8], run, art, folder)
    np.testing.assert_allclose(got, model.prepare_images(images[:8], u[:8]), atol=1e-6)
    # the intensity step is not a no-op: the sites' brightness differences are gone
    assert not np.allclose(got, model.align_images(images[:8]), atol=1e-3)
    plain = {"id": 6, "config": {"model": {}}}
    np.testing.assert_array_equal(_registered(images[:8], u[:8], plain, art, folder), images[:8])


def test_an_altered_model_file_stops_scoring(prepared_run):
    _, images, u, folder, art = prepared_run
    bad = {"model.pt": dict(art["model.pt"], sha256="0" * 64)}
    with pytest.raises(DataError, match="model file is missing or altered"):
        _registered(images[:2], u[:2], {"id": 5, "config": {"model": PREPARED}}, bad, folder)
