"""The YAML config: validation errors name the key and the fix; secrets never in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import MriReduction, VariableType, config_from_dict, expand_env, load_config
from pipeline.errors import ConfigError

MINIMAL = {
    "dicom": {"source": "images"},
    "clinical": {"url": "sqlite:///clinic.db", "query": "SELECT * FROM t", "id_column": "mrn"},
}


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    p = tmp_path / "cfg.yaml"
    p.write_text(
        "dicom: {source: images}\n"
        "clinical: {url: 'sqlite:///clinic.db', query: SELECT 1, id_column: mrn,"
        " variables: {covid: binary}}\n"
        "results: {url: 'sqlite:///out/results.db'}\n"
    )
    cfg = load_config(p)
    assert cfg.dicom.source == tmp_path / "images"
    assert cfg.dicom.modalities == ("CR", "DX", "MR")
    assert cfg.dicom.mri_reduction is MriReduction.MIDDLE
    assert cfg.clinical.variables == {"covid": VariableType.BINARY}
    assert cfg.results.url == f"sqlite:///{tmp_path / 'out' / 'results.db'}"
    assert cfg.seed == 0 and cfg.model == {}


def test_unknown_keys_are_rejected_with_their_path() -> None:
    bad = {**MINIMAL, "dicom": {"source": "x", "sorce": "y"}, "modle": {}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(bad)
    msg = str(err.value)
    assert "dicom.sorce: unknown key" in msg
    assert "modle: unknown key" in msg


def test_missing_required_key_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="clinical: required key is missing"):
        config_from_dict({"dicom": {"source": "x"}})
    bad = {**MINIMAL, "clinical": {**MINIMAL["clinical"], "variables": {"age": "numeric"}}}
    with pytest.raises(ConfigError, match="clinical.variables.age"):
        config_from_dict(bad)
    with pytest.raises(ConfigError, match="dicom.image_size"):
        config_from_dict({**MINIMAL, "dicom": {"source": "x", "image_size": 2}})


def test_literal_password_refused_env_reference_expanded(monkeypatch) -> None:
    bad = {**MINIMAL, "results": {"url": "postgresql://cmcl:hunter2@db/results"}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(bad)
    assert "literal password" in str(err.value)
    assert "hunter2" not in str(err.value)
    ok = {**MINIMAL, "results": {"url": "postgresql://cmcl:${CMCL_DB_PASSWORD}@db/results"}}
    cfg = config_from_dict(ok)
    monkeypatch.setenv("CMCL_DB_PASSWORD", "s3cret")
    assert expand_env(cfg.results.url) == "postgresql://cmcl:s3cret@db/results"
    monkeypatch.delenv("CMCL_DB_PASSWORD")
    with pytest.raises(ConfigError, match="CMCL_DB_PASSWORD"):
        expand_env(cfg.results.url)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("dicom: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_relative_sqlite_urls_resolve_against_the_config_folder(tmp_path: Path) -> None:
    data = {
        "dicom": {"source": "images"},
        "clinical": {"url": "sqlite:///clinic.db", "query": "SELECT 1", "id_column": "mrn"},
        "results": {"url": "sqlite+pysqlite:///out/r.db?timeout=5"},
    }
    cfg = config_from_dict(data, base_dir=tmp_path)
    assert cfg.clinical.url == f"sqlite:///{tmp_path / 'clinic.db'}"
    assert cfg.results.url == f"sqlite+pysqlite:///{tmp_path / 'out' / 'r.db'}?timeout=5"
    absolute = {**data, "results": {"url": "sqlite:////abs/r.db"}}
    assert config_from_dict(absolute, base_dir=tmp_path).results.url == "sqlite:////abs/r.db"
