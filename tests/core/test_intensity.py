"""Tests of cmcl_core.intensity (per-site / per-image intensity standardisation) and the
estimator's ``intensity`` settings."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cmcl_core import CMCL
from cmcl_core.config import CMCLConfig
from cmcl_core.intensity import IntensityMap
from cmcl_core.simulate import simulate_setting

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAIN, OFFSET = np.array([0.7, 1.0, 1.3]), np.array([0.1, 0.0, -0.1])


@pytest.fixture(scope="module")
def sites():
    """Images whose content does not depend on the site, seen through three scanners."""
    rng = np.random.default_rng(0)
    content = 0.3 + 0.4 * rng.random((300, 1, 8, 8))  # [n, 1, 8, 8] in [0.3, 0.7]
    site = rng.integers(3, size=300).astype(float)  # [n]
    k = site.astype(int)
    seen = 0.5 + GAIN[k, None, None, None] * (content - 0.5) + OFFSET[k, None, None, None]
    return content, seen.astype(np.float32), site


def test_group_map_undoes_each_sites_gain_and_offset(sites):
    content, seen, site = sites
    imap = IntensityMap.fit(seen, "group", site)
    out = imap.apply(seen, site)
    assert out.dtype == np.float32 and out.shape == seen.shape
    before = [seen[site == s].mean() for s in range(3)]
    after = [out[site == s].mean() for s in range(3)]
    assert np.ptp(before) > 0.1 and np.ptp(after) < 1e-5, (before, after)
    sds = [out[site == s].std() for s in range(3)]
    assert np.ptp(sds) < 1e-5
    # one affine map per site: every image keeps its content up to the shared map
    flat_c, flat_o = content.reshape(300, -1), out.reshape(300, -1)
    for s in range(3):
        a = np.polyfit(flat_c[site == s].ravel(), flat_o[site == s].ravel(), 1)
        resid = flat_o[site == s] - np.polyval(a, flat_c[site == s])
        assert np.abs(resid).max() < 1e-4
    slopes = [np.polyfit(flat_c[site == s].ravel(), flat_o[site == s].ravel(), 1)[0]
              for s in range(3)]  # fmt: skip
    assert np.ptp(slopes) < 0.02, slopes  # the same contrast after the map


def test_image_map_gives_every_image_the_reference_statistics(sites):
    _, seen, _ = sites
    imap = IntensityMap.fit(seen, "image")
    out = imap.apply(seen)
    flat = out.reshape(len(out), -1)
    np.testing.assert_allclose(flat.mean(1), imap.ref_mean, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), imap.ref_sd, atol=1e-5)


def test_an_unseen_level_falls_back_to_the_images_own_statistics(sites, caplog):
    _, seen, site = sites
    imap = IntensityMap.fit(seen[site < 2], "group", site[site < 2])
    with caplog.at_level(logging.WARNING, logger="cmcl_core.intensity"):
        out = imap.apply(seen[:20], site[:20])
    assert "not seen in training" in caplog.text
    new = site[:20] == 2
    assert new.any()
    flat = out[new].reshape(int(new.sum()), -1)
    np.testing.assert_allclose(flat.mean(1), imap.ref_mean, atol=1e-5)
    again = IntensityMap.from_dict(imap.to_dict())
    assert again == imap


def test_group_mode_needs_codes():
    with pytest.raises(ValueError, match="level code per image"):
        IntensityMap.fit(np.zeros((4, 1, 2, 2)), "group")
    with pytest.raises(ValueError, match="'image' or 'group'"):
        IntensityMap.fit(np.zeros((4, 1, 2, 2)), "site")


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"intensity": "scanner"}, "intensity must be"),
        ({"intensity": "group"}, "intensity_group"),
        ({"intensity": "image", "intensity_group": "site"}, "intensity_group"),
    ],
)
def test_bad_intensity_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        CMCLConfig(**settings)


def test_simulated_sites_lose_their_brightness_difference():
    data = simulate_setting("4/10", n=600, image_size=16, seed=0, n_sites=3)
    site = data.u[:, list(data.u_names).index("site")]
    imap = IntensityMap.fit(data.images, "group", site)
    out = imap.apply(data.images, site)
    before = np.ptp([data.images[site == s].std() for s in range(3)])
    after = np.ptp([out[site == s].std() for s in range(3)])
    assert after < 0.1 * before, (before, after)


def test_estimator_standardises_in_fit_transform_and_after_loading(tmp_path):
    data = simulate_setting("4/10", n=200, image_size=16, seed=1, n_sites=3)
    kw = dict(epochs=2, min_epochs=2, batch_size=32, seed=0, device="cpu", num_threads=1)
    model = CMCL(latent_dim=4, intensity="group", intensity_group="site", **kw)
    model.fit(data.images, data.u, list(data.u_types), list(data.u_names))
    assert model.intensity_map_.mode == "group" and len(model.intensity_map_.levels) == 3
    z = model.transform(data.images[:20], data.u[:20])
    prepared = model.prepare_images(data.images[:20], data.u[:20])
    assert not np.allclose(prepared, data.images[:20], atol=1e-3)
    direct = model.network_.posterior_means(prepared, data.u[:20])
    np.testing.assert_allclose(z, direct, atol=1e-5)
    model.save(str(tmp_path / "m.pt"))
    loaded = CMCL.load(str(tmp_path / "m.pt"), device="cpu")
    assert loaded.intensity_map_ == model.intensity_map_
    np.testing.assert_allclose(loaded.transform(data.images[:20], data.u[:20]), z, atol=1e-5)
    plain = CMCL(latent_dim=4, **kw).fit(data.images, data.u, list(data.u_types),
                                         list(data.u_names))  # fmt: skip
    assert plain.intensity_map_ is None
    np.testing.assert_array_equal(plain.prepare_images(data.images[:3], data.u[:3]),
                                  data.images[:3])  # fmt: skip


@pytest.mark.parametrize("group, match", [("scanner", "not a u column"), ("u0", "not categorical")])
def test_the_group_column_must_be_a_categorical_u(group, match):
    data = simulate_setting("4/10", n=80, image_size=16, seed=1, n_sites=3)
    model = CMCL(latent_dim=4, intensity="group", intensity_group=group, epochs=1,
                 min_epochs=1, batch_size=16, device="cpu", num_threads=1)  # fmt: skip
    with pytest.raises(ValueError, match=match):
        model.fit(data.images, data.u, list(data.u_types), list(data.u_names))
