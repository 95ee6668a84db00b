"""The stability step on the compute engines: local threads and a 2-worker Dask LocalCluster
give the same frequencies; the full level refits; bad compute settings fail before any work."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core import CMCL
from cmcl_core.stability import assess_stability as assess_in_process
from flows.compute import check_compute
from flows.stability import assess_stability
from pipeline.config import ComputeConfig, config_from_dict
from pipeline.errors import ConfigError
from tests.core.test_estimator import two_edge_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    images, u, _ = two_edge_data(n=200)
    model = CMCL(latent_dim=2, seed=0, device="cpu", epochs=20, min_epochs=20, num_threads=1,
                 val_fraction=0.0).fit(images, u)  # fmt: skip
    path = tmp_path_factory.mktemp("stab") / "images.npy"
    np.save(path, images)
    return model, path, u


def _cfg(engine: str, resamples: int = 12, level: str = "dag"):
    return config_from_dict(
        {
            "dicom": {"source": "/nowhere"},
            "clinical": {"url": "sqlite:///x.db", "query": "SELECT 1", "id_column": "id"},
            "stability": {"resamples": resamples, "level": level},
            "compute": {"engine": engine, "workers": 2},
            "seed": 3,
        }
    )


def test_local_and_dask_engines_give_the_same_stabilities(fitted, prefect_harness):
    model, path, u = fitted
    local = assess_stability(_cfg("local"), model, path, u)  # two chunks: 10 + 2 resamples
    dask = assess_stability(_cfg("dask"), model, path, u)
    assert local.resamples == dask.resamples == 12
    np.testing.assert_array_equal(local.adjacency, dask.adjacency)
    np.testing.assert_array_equal(local.forward, dask.forward)
    # and the library's own resampling with the same seed (no Prefect at all)
    alone = assess_in_process(model, np.load(path), u, resamples=12, seed=3)
    np.testing.assert_array_equal(local.forward, alone.forward)
    assert local.adjacency.max() == 1.0  # the strong true edges are in every resample


def test_full_level_refits_and_matches_latents(fitted, prefect_harness):
    model, path, u = fitted
    short = model.get_params() | {"epochs": 3, "min_epochs": 3}
    quick = CMCL(**short).fit(np.load(path), u)
    s = assess_stability(_cfg("local", resamples=2, level="full"), quick, path, u)
    assert s.level == "full" and s.resamples == 2
    assert s.adjacency.shape == (4, 4) and np.allclose(s.adjacency, s.adjacency.T)
    off = config_from_dict({**_cfg("local").model_dump(mode="json"), "stability": None})
    assert assess_stability(off, quick, path, u) is None


def test_unreachable_dask_scheduler_fails_before_any_work():
    with pytest.raises(ConfigError, match="tcp://127.0.0.1:9") as err:
        check_compute(ComputeConfig(engine="dask", address="tcp://127.0.0.1:9"))
    assert "compute.address" in err.value.fix
    check_compute(ComputeConfig())  # local: nothing to reach
