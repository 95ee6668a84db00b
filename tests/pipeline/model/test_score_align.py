"""Scoring a run trained with ``model.align``: new images are registered to its template."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core import CMCL
from pipeline.errors import DataError
from pipeline.model.artifacts import file_artifact
from pipeline.model.score import _registered


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.random((64, 1, 16, 16)).astype(np.float32)
    u = rng.normal(size=(64, 2))
    model = CMCL(latent_dim=2, align="similarity", epochs=1, min_epochs=1, batch_size=16,
                 seed=0, device="cpu", num_threads=1, refit_dag=False)  # fmt: skip
    model.fit(images, u)
    folder = tmp_path_factory.mktemp("run")
    model.save(str(folder / "model.pt"))
    art = {"model.pt": vars(file_artifact(folder / "model.pt", folder, "torch"))}
    return model, images, folder, art


def test_scoring_registers_images_of_an_aligned_run(aligned_run):
    model, images, folder, art = aligned_run
    run = {"id": 5, "config": {"model": {"align": "similarity"}}}
    np.testing.assert_allclose(
        _registered(images[:8], run, art, folder), model.align_images(images[:8]), atol=1e-6
    )
    plain = {"id": 6, "config": {"model": {}}}
    np.testing.assert_array_equal(_registered(images[:8], plain, art, folder), images[:8])


def test_an_altered_model_file_stops_scoring(aligned_run, tmp_path):
    _, images, folder, art = aligned_run
    bad = {"model.pt": dict(art["model.pt"], sha256="0" * 64)}
    with pytest.raises(DataError, match="model file is missing or altered"):
        _registered(
            images[:2], {"id": 5, "config": {"model": {"align": "similarity"}}}, bad, folder
        )
