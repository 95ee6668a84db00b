"""Tests of cmcl_core.align (groupwise similarity registration) and the estimator's ``align``."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core import CMCL
from cmcl_core.align import align_to_template, groupwise_align
from cmcl_core.simulate import simulate_setting

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def posed():
    """The same patients imaged without and with positioning jitter."""
    clean = simulate_setting("4/10", n=300, image_size=32, seed=0)
    moved = simulate_setting("4/10", n=300, image_size=32, seed=0, jitter=1.0)
    return clean, moved


def test_registration_undoes_positioning(posed):
    clean, moved = posed
    aligned, params, template = groupwise_align(moved.images)
    assert aligned.shape == moved.images.shape and template.shape == moved.images.shape[1:]
    before = np.abs(moved.images - clean.images).mean()
    after = np.abs(aligned - clean.images).mean()
    assert after < 0.8 * before, (before, after)
    # the fitted shifts follow the true ones (x, y in pixels; parameters in normalised units)
    for k in (0, 1):
        r = np.corrcoef(params[:, k], moved.pose[:, k])[0, 1]
        assert r > 0.7, (k, r)  # 0.82 / 0.94 here; 0.98 / 0.93 at n = 1000
    np.testing.assert_allclose(params.mean(0), 0.0, atol=1e-5)  # the cohort does not drift


def test_registered_images_stay_where_they_are(posed):
    clean, _ = posed
    aligned = align_to_template(clean.images[:50], clean.images.mean(0))
    assert np.abs(aligned - clean.images[:50]).mean() < 0.25 * clean.images.std()


def test_estimator_registers_in_fit_transform_and_after_loading(posed, tmp_path):
    _, moved = posed
    model = CMCL(latent_dim=4, align="similarity", epochs=2, min_epochs=2, batch_size=32,
                 seed=0, device="cpu", num_threads=1)  # fmt: skip
    model.fit(moved.images, moved.u)
    assert model.align_template_.shape == moved.images.shape[1:]
    z = model.transform(moved.images[:20], moved.u[:20])
    # transform sees registered images: the encoder alone on them gives the same latents
    direct = model.network_.posterior_means(model.align_images(moved.images[:20]), moved.u[:20])
    np.testing.assert_allclose(z, direct, atol=1e-5)
    model.save(str(tmp_path / "m.pt"))
    loaded = CMCL.load(str(tmp_path / "m.pt"), device="cpu")
    np.testing.assert_array_equal(loaded.align_template_, model.align_template_)
    np.testing.assert_allclose(loaded.transform(moved.images[:20], moved.u[:20]), z, atol=1e-5)
    plain = CMCL(latent_dim=4, epochs=2, min_epochs=2, batch_size=32, seed=0, device="cpu",
                 num_threads=1).fit(moved.images, moved.u)  # fmt: skip
    assert plain.align_template_ is None
    np.testing.assert_array_equal(plain.align_images(moved.images[:3]), moved.images[:3])


def test_unknown_align_mode_is_refused():
    with pytest.raises(ValueError, match="align"):
        CMCL(align="affine").config()


def test_content_that_differs_over_a_wide_area_is_not_moved():
    """Overlapping findings change wide areas of the image; with no positioning variation the
    registration must leave the images where they are (the pose prior's job)."""
    overlap = simulate_setting("4/10", n=300, image_size=32, seed=0, overlap=1.0)
    aligned, params, _ = groupwise_align(overlap.images)
    assert np.abs(params).mean() < 0.1, np.abs(params).mean()  # 0.061; 0.284 without the prior
    assert np.abs(aligned - overlap.images).mean() < 0.045  # 0.030 here; 0.067 without the prior
