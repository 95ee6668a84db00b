"""Fast checks of the end-to-end pieces that need no training."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.errors import ConfigError


def test_serve_needs_a_server_and_a_valid_cron(tiny_config, monkeypatch):
    import flows.serve as serve

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(serve, "_profile_api_url", lambda: None)
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        serve.serve_deployment(tiny_config)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with pytest.raises(ConfigError, match="cron"):
        serve.serve_deployment(tiny_config, cron="every day")


def test_cli_user_errors_exit_2(tmp_path, tiny_config, key_env):
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "config file not found" in res.output
    res = runner.invoke(app, ["edges", "--config", str(tiny_config)])
    assert res.exit_code == 2 and "no succeeded run" in res.output
    res = runner.invoke(app, ["score", "--config", str(tiny_config), "--run", "3"])
    assert res.exit_code == 2 and "run 3 does not exist" in res.output


def test_run_without_key_fails_before_prefect(tiny_config, monkeypatch):
    monkeypatch.delenv("CMCL_PSEUDONYM_KEY", raising=False)
    res = CliRunner().invoke(app, ["run", "--config", str(tiny_config)])
    assert res.exit_code == 2 and "CMCL_PSEUDONYM_KEY" in res.output
