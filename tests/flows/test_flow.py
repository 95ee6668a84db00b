"""The flow ``cmcl`` under a Prefect test harness on a tiny synthetic cohort."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.flows.conftest import (
    TEST_KEY,
    TINY_MODEL,
    TINY_STABILITY,
    copy_tree_bytes,
    phi_canaries,
)

# A Prefect test API, a cohort and a whole flow run: about 1 min of CPU, minutes on a busy
# machine; CI runs it with the other slow tests.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flow_run(tiny_cohort, prefect_harness, tmp_path_factory):
    """Run the flow once for the module; returns (output, config path, captured log text)."""
    from flows.train import cmcl_flow

    tmp = tmp_path_factory.mktemp("flowrun")
    data = yaml.safe_load((tiny_cohort / "config.yaml").read_text())
    data["results"] = {"url": f"sqlite:///{tmp / 'results.db'}", "report_dir": str(tmp / "rep")}
    data["dicom"].update(cache_dir=str(tmp / "cache"), workers=1)
    data["model"] = dict(TINY_MODEL)
    data["stability"] = dict(TINY_STABILITY)
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    mp = pytest.MonkeyPatch()
    mp.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    grab = Grab(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(grab)
    root.setLevel(logging.DEBUG)
    try:
        out = cmcl_flow(config=str(cfg_path))
    finally:
        root.removeHandler(grab)
        root.setLevel(old_level)
        mp.undo()
    return out, cfg_path, "\n".join(records)


def _engine(cfg_path: Path):
    from db.engine import open_results
    from pipeline.config import load_config

    return open_results(load_config(cfg_path).results.url), load_config(cfg_path)


def test_flow_writes_a_succeeded_run(flow_run):
    from db.read import get_artifacts, get_run, read_edges, read_latents, read_variables

    out, cfg_path, _ = flow_run
    engine, cfg = _engine(cfg_path)
    run = get_run(engine, out["run_id"])
    assert run["status"] == "succeeded" and out["status"] == "succeeded"
    assert run["device"] == "cpu" and len(run["data_fingerprint"]) == 64
    assert run["code_version"].startswith("0.1.0")
    assert run["config"]["model"]["latent_dim"] == TINY_MODEL["latent_dim"]
    edges = read_edges(engine, out["run_id"])
    # rows: the reference fit's edges, plus adjacencies only the resamples found (weight 0,
    # in at least half of them)
    assert sorted((e["source"], e["target"]) for e in edges if e["weight"] != 0) == sorted(
        (s, t) for s, t, _ in out["edges"]
    )
    assert all(e["stability"] >= 0.5 for e in edges if e["weight"] == 0)
    lat = read_latents(engine, out["run_id"])
    assert len(lat) == run["n_images"] == run["metrics"]["n_images"] > 30
    assert all(len(r["z"]) == TINY_MODEL["latent_dim"] for r in lat)
    names = [v["name"] for v in read_variables(engine, out["run_id"])]
    assert names[-3:] == ["z0", "z1", "z2"]
    metrics = run["metrics"]
    assert metrics["training"]["epochs"] == TINY_MODEL["epochs"]
    assert 0.0 < metrics["stability_seconds"] < metrics["seconds"]  # resampling is on
    # every latent has a role; one on a clinical edge is "clinical", one on none is not
    on_edge = {n for e in edges for n in (e["source"], e["target"]) if e["stability"] >= 0.5}
    assert metrics["latent_roles"] == out["latent_roles"]
    assert list(out["latent_roles"]) == ["z0", "z1", "z2"]
    for z, role in out["latent_roles"].items():
        assert (role == "clinical") == (z in on_edge), (z, role)
    assert metrics["onnx"]["onnx_encoder_max_abs_diff"] <= 1e-4
    assert metrics["onnx"]["onnx_decoder_max_abs_diff"] <= 1e-4
    run_dir = Path(cfg.results.report_dir) / f"run-{out['run_id']}"
    from pipeline.model.artifacts import sha256_file

    arts = get_artifacts(engine, out["run_id"])
    assert {"encoder.onnx", "decoder.onnx", "index.html"} <= {a["name"] for a in arts}
    for a in arts:
        assert sha256_file(run_dir / a["relpath"]) == a["sha256"]
    engine.dispose()


def test_report_is_offline_and_complete(flow_run):
    out, cfg_path, _ = flow_run
    index = Path(out["report"])
    html = index.read_text()
    run_dir = index.parent
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for ref in ("dag.png", "metrics.json"):
        assert ref in html and (run_dir / ref).is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_edges"] == len(out["edges"])
    causal = [(s, t) for s, t, _ in out["edges"] if s.startswith("u") or not s.startswith("z")]
    causal = [(s, t) for s, t in causal if t.startswith("z")]
    grids = sorted(p.name for p in (run_dir / "interventions").glob("*.png"))
    assert len(grids) == len(causal)
    latents = {n for e in out["edges"] for n in e[:2] if str(n).startswith("z")}
    maps = sorted(p.name for p in (run_dir / "saliency").glob("*.png"))
    assert len(maps) >= len(latents)  # a map per latent: those on an edge and the others
    assert maps == [f"z{j}.png" for j in range(TINY_MODEL["latent_dim"])]
    for name in maps:
        assert f"saliency/{name}" in html


def test_no_phi_in_db_report_onnx_logs(flow_run, tiny_cohort, prefect_home):
    out, cfg_path, logs = flow_run
    storage = prefect_home / "storage"
    assert not storage.exists() or not any(storage.rglob("*")), "Prefect persisted task results"
    _, cfg = _engine(cfg_path)
    canaries = phi_canaries(tiny_cohort)
    assert len(canaries) > 20
    db_bytes = Path(cfg.results.url[len("sqlite:///") :]).read_bytes()
    report_bytes = copy_tree_bytes(Path(cfg.results.report_dir))
    assert logs, "the flow logged nothing?"
    for c in canaries:
        b = c.encode()
        assert b not in db_bytes, "PHI canary in the results database"
        assert b not in report_bytes, "PHI canary in the report/ONNX files"
        assert c not in logs, "PHI canary in the logs"
        assert str(tiny_cohort / "dicom") not in logs


def test_onnx_session_refuses_altered_file_and_score_fills_latents(flow_run, tmp_path):
    import sqlalchemy as sa

    from db.read import get_artifacts, read_latents
    from pipeline.config import run_folder
    from pipeline.errors import DataError
    from pipeline.model.onnx_export import load_session
    from pipeline.model.score import score_run

    out, cfg_path, _ = flow_run
    engine, cfg = _engine(cfg_path)
    run_id = out["run_id"]
    enc = next(a for a in get_artifacts(engine, run_id) if a["name"] == "encoder.onnx")
    path = run_folder(cfg, run_id) / enc["relpath"]
    bad = tmp_path / "encoder.onnx"
    shutil.copy(path, bad)
    with open(bad, "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="sha256"):
        load_session(bad, enc["sha256"])
    before = {r["image_key"]: r["z"] for r in read_latents(engine, run_id)}
    dropped = sorted(before)[:5]
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM cmcl_latents WHERE run_id = :r AND image_key IN :k").bindparams(
                sa.bindparam("k", expanding=True)
            ),
            {"r": run_id, "k": dropped},
        )
    res = score_run(cfg, run_id, key=bytes.fromhex(TEST_KEY), engine=engine)
    assert res.scored == 5 and res.already == len(before) - 5
    assert res.provider == "CPUExecutionProvider"
    after = {r["image_key"]: r for r in read_latents(engine, run_id)}
    for k in dropped:
        assert after[k]["scored"] is True
        np.testing.assert_allclose(after[k]["z"], before[k], atol=1e-4)
    engine.dispose()


def test_rerun_same_inputs_is_idempotent(flow_run):
    """Same inputs and config: a new run row with the same fingerprint and the same edges."""
    from db.read import get_run, read_edges
    from flows.train import cmcl_flow

    out, cfg_path, _ = flow_run
    mp = pytest.MonkeyPatch()
    mp.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)
    try:
        again = cmcl_flow(config=str(cfg_path))
    finally:
        mp.undo()
    engine, _ = _engine(cfg_path)
    r1, r2 = get_run(engine, out["run_id"]), get_run(engine, again["run_id"])
    assert r2["id"] != r1["id"] and r2["data_fingerprint"] == r1["data_fingerprint"]
    e1 = [(e["source"], e["target"], round(e["weight"], 4)) for e in read_edges(engine, r1["id"])]
    e2 = [(e["source"], e["target"], round(e["weight"], 4)) for e in read_edges(engine, r2["id"])]
    assert e1 == e2
    engine.dispose()


def test_cli_edges_prints_the_run(flow_run):
    from typer.testing import CliRunner

    from flows.cli import app

    out, cfg_path, _ = flow_run
    res = CliRunner().invoke(app, ["edges", "--config", str(cfg_path), "--run", str(out["run_id"])])
    assert res.exit_code == 0, res.output
    assert f"run {out['run_id']} (succeeded)" in res.output
    for s, t, _ in out["edges"]:
        assert s in res.output and t in res.output
    others = [z for z, role in out["latent_roles"].items() if role != "clinical"]
    text = " ".join(res.output.split())  # the console wraps long lines
    assert ("latents on no clinical edge" in text) == bool(others)
    for z in others:
        assert f"{z} {out['latent_roles'][z]}" in text


def test_a_missing_clinical_database_fails_the_run_before_ingest_without_retries(
    tiny_cohort, prefect_harness, tmp_path, caplog
):
    """A permanent error (the clinical database does not exist) is not retried: the run is
    marked failed with the message, nothing is ingested, no task run retries."""
    from db.errors import DatabaseUnavailable
    from db.read import latest_run, list_runs, read_catalog
    from flows.train import cmcl_flow

    data = yaml.safe_load((tiny_cohort / "config.yaml").read_text())
    data["results"] = {"url": f"sqlite:///{tmp_path / 'r.db'}", "report_dir": str(tmp_path)}
    data["clinical"]["url"] = f"sqlite:///{tmp_path / 'no-such-clinic.db'}"
    data["dicom"].update(cache_dir=str(tmp_path / "cache"), workers=1)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    mp = pytest.MonkeyPatch()
    mp.setenv("CMCL_PSEUDONYM_KEY", TEST_KEY)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(DatabaseUnavailable):
            cmcl_flow(config=str(cfg_path))
    finally:
        mp.undo()
    assert "Retry" not in caplog.text
    engine, _ = _engine(cfg_path)
    (run,) = list_runs(engine)
    assert run["status"] == "failed" and "no-such-clinic.db does not exist" in run["error"]
    assert latest_run(engine) is None and read_catalog(engine) == []
    engine.dispose()
