"""End to end through real processes: a run killed with SIGKILL, and the served deployment.

Both tests start their own processes in new sessions and always kill those process groups
(and only those) in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import TEST_KEY, TINY_MODEL, TINY_STABILITY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        CMCL_PSEUDONYM_KEY=TEST_KEY,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


class _Proc:
    """A child process in its own session whose output is collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.lines: list[str] = []
        self.p = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.text():
                return True
            if self.p.poll() is not None:
                return needle in self.text()
            time.sleep(0.5)
        return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=30)


def _config(tiny_cohort: Path, tmp_path: Path, **model) -> Path:
    data = yaml.safe_load((tiny_cohort / "config.yaml").read_text())
    data["results"] = {
        "url": f"sqlite:///{tmp_path / 'results.db'}",
        "report_dir": str(tmp_path / "rep"),
    }
    data["dicom"].update(cache_dir=str(tmp_path / "cache"), workers=1)
    data["model"] = {**TINY_MODEL, **model}
    data["stability"] = dict(TINY_STABILITY)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _counts(cfg_path: Path) -> list[tuple]:
    import sqlalchemy as sa

    from pipeline.config import load_config

    eng = sa.create_engine(load_config(cfg_path).results.url)
    with eng.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.id, r.status, (SELECT COUNT(*) FROM cmcl_edges e WHERE e.run_id = r.id), "
                "(SELECT COUNT(*) FROM cmcl_latents l WHERE l.run_id = r.id) FROM cmcl_runs r "
                "ORDER BY r.id"
            )
        ).all()
    eng.dispose()
    return [tuple(r) for r in rows]


@pytest.mark.slow
def test_sigkill_during_training_leaves_nothing_and_next_run_succeeds(tiny_cohort, tmp_path):
    cfg = _config(tiny_cohort, tmp_path, epochs=500, min_epochs=500, patience=1000)
    run = _Proc([str(BIN / "cmcl"), "run", "--config", str(cfg)], _env(tmp_path), tmp_path)
    try:
        assert run.wait_for("epoch 2:", timeout=240), run.text()[-3000:]
        run.kill(signal.SIGKILL)
    finally:
        run.kill()
    rows = _counts(cfg)
    assert rows == [(1, "running", 0, 0)], rows  # no partial edges or latents
    cfg2 = _config(tiny_cohort, tmp_path)  # same cohort, short training
    again = _Proc(
        [str(BIN / "cmcl"), "run", "--config", str(cfg2)],
        _env(tmp_path, CMCL_STALE_AFTER_S="0"),
        tmp_path,
    )
    try:
        again.p.wait(timeout=400)
    finally:
        again.kill()
    assert again.p.returncode == 0, again.text()[-3000:]
    rows = _counts(cfg2)
    assert rows[0][:2] == (1, "crashed") and rows[0][2:] == (0, 0)
    assert rows[1][1] == "succeeded" and rows[1][3] > 30
    assert "report:" in again.text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


@pytest.mark.slow
def test_served_deployment_runs_the_pipeline(tiny_cohort, tmp_path):
    cfg = _config(tiny_cohort, tmp_path)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path, PREFECT_API_URL=api)
    procs: list[_Proc] = []
    try:
        server = _Proc(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            tmp_path,
        )
        procs.append(server)
        assert _wait_http(f"{api}/health", 120), server.text()[-3000:]
        serve = _Proc([str(BIN / "cmcl"), "serve", "--config", str(cfg)], env, tmp_path)
        procs.append(serve)
        deployed = f"{api}/deployments/name/cmcl/train"
        assert _wait_http(deployed, 120), serve.text()[-3000:]
        trigger = subprocess.run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "cmcl/train",
                "--watch",
                "--watch-timeout",
                "400",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=450,
        )
        out = trigger.stdout + trigger.stderr
        assert trigger.returncode == 0, out[-3000:] + serve.text()[-3000:]
        assert "Completed" in out
    finally:
        for p in reversed(procs):
            p.kill(signal.SIGTERM)
    rows = _counts(cfg)
    assert len(rows) == 1 and rows[0][1] == "succeeded", rows
    assert rows[0][3] > 30  # latents of every joined image
