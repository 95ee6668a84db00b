"""The model step's settings: latent_dim split off, CMCLConfig validated with clear errors."""

from __future__ import annotations

import pytest

from cmcl_core.config import CMCLConfig
from pipeline.errors import ConfigError
from pipeline.model.fit import DEFAULT_LATENT_DIM, check_intensity_group, model_settings


def test_model_settings_split_latent_dim_and_reject_typos():
    m, cfg = model_settings({"latent_dim": 7, "epochs": 3})
    assert m == 7 and cfg.epochs == 3
    assert model_settings({})[0] == DEFAULT_LATENT_DIM
    with pytest.raises(ConfigError, match="epochz"):
        model_settings({"epochz": 3})
    with pytest.raises(ConfigError, match="latent_dim"):
        model_settings({"latent_dim": 0})


def test_the_intensity_group_must_be_a_categorical_clinical_variable():
    cfg = CMCLConfig(intensity="group", intensity_group="site")
    check_intensity_group(cfg, ["covid", "site"], ["binary", "categorical"])  # fine
    with pytest.raises(ConfigError, match="does not return") as err:
        check_intensity_group(cfg, ["covid", "scanner"], ["binary", "categorical"])
    assert "intensity_group" in err.value.fix
    with pytest.raises(ConfigError, match="not categorical") as err:
        check_intensity_group(cfg, ["covid", "site"], ["binary", "continuous"])
    assert "site: categorical" in err.value.fix
    check_intensity_group(CMCLConfig(), ["covid"], ["binary"])  # off: nothing to check
