"""The model step's settings: latent_dim split off, CMCLConfig validated with clear errors."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.model.fit import DEFAULT_LATENT_DIM, model_settings


def test_model_settings_split_latent_dim_and_reject_typos():
    m, cfg = model_settings({"latent_dim": 7, "epochs": 3})
    assert m == 7 and cfg.epochs == 3
    assert model_settings({})[0] == DEFAULT_LATENT_DIM
    with pytest.raises(ConfigError, match="epochz"):
        model_settings({"epochz": 3})
    with pytest.raises(ConfigError, match="latent_dim"):
        model_settings({"latent_dim": 0})
