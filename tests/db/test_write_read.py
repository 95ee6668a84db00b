"""Write/read helpers on SQLite and PostgreSQL: idempotence, atomicity, round trips, privacy."""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from db import read, write
from db.engine import open_results
from db.errors import ResultsIntegrityError
from db.models import Run
from db.records import ArtifactRow, EdgeRow, ImageRow, LatentRow, QuarantineRow, VariableRow

CANARY = "PATIENT-CANARY-8c1f"  # must never surface in an error message


def key(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture
def engine(results_url):
    eng = open_results(results_url)
    yield eng
    eng.dispose()


def image(i: int, **kw) -> ImageRow:
    base = dict(
        image_key=key(f"img{i}"),
        patient_key=key(f"pat{i % 3}"),
        study_key=key(f"study{i}"),
        series_key=key(f"series{i}"),
        file_key=key(f"file{i}"),
        content_sha256=key(f"content{i}"),
        modality="CR",
        photometric="MONOCHROME2",
        rows=64,
        columns=48,
    )
    return ImageRow(**(base | kw))


def count(engine, table: str, run_id: int | None = None) -> int:
    sql = f"SELECT COUNT(*) FROM {table}" + ("" if run_id is None else " WHERE run_id = :r")
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), {"r": run_id}).scalar_one()


def make_results(m: int = 4, n: int = 50, seed: int = 0):
    rng = random.Random(seed)
    variables = [
        VariableRow("covid", "clinical", "binary", 0),
        VariableRow("age", "clinical", "continuous", 1),
    ] + [VariableRow(f"z{j}", "latent", "latent", 2 + j) for j in range(m)]
    edges = [
        EdgeRow("covid", "z0", 0.8, "clinical", "latent"),
        EdgeRow("z1", "age", -0.4, "latent", "clinical"),
        EdgeRow("z2", "z3", 0.35, "latent", "latent"),
    ]
    latents = [
        LatentRow(key(f"img{i}"), key(f"pat{i % 7}"), [rng.gauss(0, 1) for _ in range(m)])
        for i in range(n)
    ]
    return variables, edges, latents


def test_upsert_images_is_idempotent_and_refreshes_last_seen(engine):
    rows = [image(i) for i in range(25)]
    assert write.upsert_images(engine, rows, chunk_size=7) == 25
    before = {r["image_key"]: r for r in read.read_catalog(engine)}
    time.sleep(0.01)
    assert write.upsert_images(engine, rows, chunk_size=7) == 25
    after = {r["image_key"]: r for r in read.read_catalog(engine)}
    assert count(engine, "cmcl_images") == 25
    k = rows[0].image_key
    assert after[k]["first_seen_at"] == before[k]["first_seen_at"]
    assert after[k]["last_seen_at"] > before[k]["last_seen_at"]
    assert after[k]["last_seen_at"].tzinfo is not None
    assert read.catalog_hashes(engine)[rows[3].content_sha256] == rows[3].image_key
    assert read.catalog_file_hashes(engine)[rows[3].file_key] == rows[3].content_sha256
    # a changed attribute is updated in place
    write.upsert_images(engine, [image(0, cache_key="abc")])
    assert {r["image_key"]: r for r in read.read_catalog(engine)}[k]["cache_key"] == "abc"


def test_quarantine_upsert_counts_and_exactly_one_table(engine):
    bad = [QuarantineRow(key(f"bad{i}"), key(f"c{i}"), "truncated", "too short") for i in range(4)]
    bad.append(QuarantineRow(key("nd"), None, "not_dicom", "no DICM preamble"))
    assert write.upsert_quarantine(engine, bad) == 5
    assert write.upsert_quarantine(engine, bad) == 5
    assert count(engine, "cmcl_quarantine") == 5
    assert read.quarantine_counts(engine) == {"not_dicom": 1, "truncated": 4}
    # a fixed file moves to the catalog and leaves the quarantine
    fixed = image(100, file_key=key("bad0"))
    write.upsert_images(engine, [fixed])
    assert read.quarantine_counts(engine) == {"not_dicom": 1, "truncated": 3}
    # a catalogued file that went bad moves the other way
    write.upsert_quarantine(engine, [QuarantineRow(key("bad0"), key("x"), "decode_error", "")])
    assert count(engine, "cmcl_images") == 0
    assert read.quarantine_counts(engine)["decode_error"] == 1
    assert write.remove_quarantine(engine, [key("bad0"), key("nd")]) == 2
    assert count(engine, "cmcl_quarantine") == 3
    # a file replaced in place by another instance keeps one catalog row
    write.upsert_images(engine, [image(1)])
    write.upsert_images(engine, [image(2, file_key=image(1).file_key)])
    assert [r["image_key"] for r in read.read_catalog(engine)] == [image(2).image_key]
    assert write.remove_images(engine, [image(1).file_key]) == 1
    assert read.read_catalog(engine) == []
    q = read.read_quarantine(engine)
    assert [r["reason"] for r in q] == ["truncated"] * 3 and q[0]["detail"] == "too short"
    assert set(read.quarantine_file_hashes(engine)) == {key(f"bad{i}") for i in (1, 2, 3)}


def test_run_life_cycle_and_results_round_trip(engine):
    cfg = {"dicom": {"source": "/data"}, "results": {"url": "sqlite:///x.db"}, "seed": 0}
    run_id = write.start_run(engine, config=cfg, code_version="0.1.0+abc", device="cpu")
    assert read.get_run(engine, run_id)["status"] == "running"
    variables, edges, latents = make_results()
    arts = [ArtifactRow("encoder.onnx", "run-1/encoder.onnx", key("enc"), 1234, "onnx")]
    write.write_run_results(
        engine,
        run_id,
        edges=edges,
        latents=latents,
        variables=variables,
        artifacts=arts,
        metrics={"shd": 1, "loss": float("nan")},
    )
    run = read.get_run(engine, run_id)
    assert run["status"] == "succeeded" and run["finished_at"] >= run["started_at"]
    assert run["config"] == cfg and run["metrics"] == {"shd": 1, "loss": None}
    assert read.latest_run(engine)["id"] == run_id
    got = read.read_edges(engine)  # latest succeeded run
    assert [(e["source"], e["target"], e["direction"]) for e in got] == [
        ("covid", "z0", "causal"),
        ("z1", "age", "anti_causal"),
        ("z2", "z3", "other"),
    ]
    # z reads back exactly the same floats
    back = {r["image_key"]: r for r in read.read_latents(engine, run_id)}
    assert len(back) == len(latents)
    for lat in latents:
        assert back[lat.image_key]["z"] == list(lat.z)
        assert back[lat.image_key]["patient_key"] == lat.patient_key
    assert [v["name"] for v in read.read_variables(engine, run_id)][:2] == ["covid", "age"]
    assert read.get_artifacts(engine, run_id)[0]["sha256"] == key("enc")
    # plain SQL over the edges
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT source, target, weight FROM cmcl_edges WHERE run_id = :r ORDER BY source"
            ),
            {"r": run_id},
        ).all()
    assert rows == [("covid", "z0", 0.8), ("z1", "age", -0.4), ("z2", "z3", 0.35)]
    # writing again replaces, never duplicates
    write.write_run_results(engine, run_id, edges=edges[:1], latents=latents[:10])
    assert count(engine, "cmcl_edges", run_id) == 1 and count(engine, "cmcl_latents", run_id) == 10


def test_write_run_results_is_all_or_nothing(engine):
    run_id = write.start_run(engine, config={}, code_version="t")
    variables, edges, latents = make_results(m=4, n=30)
    bad_len = [*latents[:20], LatentRow(key("x"), key("y"), [0.0, 1.0]), *latents[20:]]
    with pytest.raises(ValueError, match="expected m = 4"):
        write.write_run_results(engine, run_id, edges=edges, latents=bad_len, variables=variables)
    dup = [*latents, LatentRow(latents[0].image_key, CANARY, [0.0] * 4)]
    with pytest.raises(ResultsIntegrityError) as info:
        write.write_run_results(engine, run_id, edges=edges, latents=dup, variables=variables)
    assert CANARY not in str(info.value) and latents[0].image_key not in str(info.value)
    for table in ("cmcl_edges", "cmcl_latents", "cmcl_run_variables", "cmcl_artifacts"):
        assert count(engine, table, run_id) == 0, table
    assert read.get_run(engine, run_id)["status"] == "running"
    assert read.read_edges(engine) == []
    write.finish_run(engine, run_id, status="failed", error="training diverged")
    run = read.get_run(engine, run_id)
    assert run["status"] == "failed" and run["error"] == "training diverged"
    assert read.latest_run(engine) is None and read.latest_run(engine, None)["id"] == run_id


def test_integrity_error_hides_bound_values(engine):
    """hide_parameters: the SQLAlchemy error itself never carries inserted values."""
    run_id = write.start_run(engine, config={}, code_version="t")
    table = sa.Table("cmcl_latents", sa.MetaData(), autoload_with=engine)
    row = {"run_id": run_id, "image_key": "k", "patient_key": CANARY, "z": [1.0]}
    with engine.begin() as conn:
        conn.execute(sa.insert(table), row)
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.execute(sa.insert(table), row)
    assert CANARY not in str(info.value)
    assert "hidden" in str(info.value)


def test_write_latents_scores_into_existing_run(engine):
    run_id = write.start_run(engine, config={}, code_version="t")
    variables, edges, latents = make_results(m=3, n=10)
    write.write_run_results(engine, run_id, edges=edges[:1], latents=latents, variables=variables)
    new = [LatentRow(key(f"new{i}"), key("p"), [0.5, -1.25, 3.0]) for i in range(5)]
    assert write.write_latents(engine, run_id, new) == 5
    assert write.write_latents(engine, run_id, new) == 5  # idempotent
    rows = read.read_latents(engine, run_id)
    assert len(rows) == 15 and sum(r["scored"] for r in rows) == 5
    with pytest.raises(ValueError, match="expected m = 3"):
        write.write_latents(engine, run_id, [LatentRow(key("w"), key("p"), [1.0])])
    with pytest.raises(ValueError, match="NaN"):
        write.write_latents(
            engine, run_id, [LatentRow(key("w"), key("p"), [1.0, 2.0, float("nan")])]
        )
    with pytest.raises(ValueError, match="does not exist"):
        write.write_latents(engine, run_id + 99, new)


def test_mark_stale_runs_and_heartbeat(engine):
    old = write.start_run(engine, config={}, code_version="t")
    fresh = write.start_run(engine, config={}, code_version="t")
    done = write.start_run(engine, config={}, code_version="t")
    write.finish_run(
        engine, done, status="succeeded", n_images=3, n_patients=2, data_fingerprint=key("d")
    )
    assert read.find_run(engine, data_fingerprint=key("d"))["id"] == done
    assert read.find_run(engine, data_fingerprint=key("other")) is None
    assert [r["id"] for r in read.list_runs(engine)] == [done, fresh, old]
    runs = Run.__table__
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with engine.begin() as conn:
        conn.execute(
            sa.update(runs).where(runs.c.id.in_([old, done])).values(heartbeat_at=long_ago)
        )
    write.heartbeat(engine, fresh)
    assert write.mark_stale_runs(engine, older_than_s=600) == 1
    assert read.get_run(engine, old)["status"] == "crashed"
    assert read.get_run(engine, old)["finished_at"] is not None
    assert read.get_run(engine, fresh)["status"] == "running"
    assert read.get_run(engine, done)["status"] == "succeeded"
    assert read.get_run(engine, done)["n_images"] == 3
    assert write.mark_stale_runs(engine, older_than_s=600) == 0
    assert fresh > old and done > fresh  # ids are handed out in order
    with pytest.raises(ValueError):
        write.finish_run(engine, fresh, status="running")


def test_run_ids_are_not_reused_after_delete(engine):
    a = write.start_run(engine, config={}, code_version="t")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cmcl_runs WHERE id = :i"), {"i": a})
    assert write.start_run(engine, config={}, code_version="t") > a


def test_edge_row_direction_is_checked():
    assert EdgeRow("u", "z0", 1.0, "clinical", "latent").direction == "causal"
    with pytest.raises(ValueError, match="contradicts"):
        EdgeRow("u", "z0", 1.0, "clinical", "latent", "anti_causal")


def test_naive_datetime_is_refused(engine):
    runs = Run.__table__
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(sa.update(runs).values(heartbeat_at=datetime(2020, 1, 1)))


def test_config_passwords_are_masked(engine):
    cfg = {"clinical": {"url": "postgresql://reader:hunter2@db/clinic"}, "seed": 1}
    run_id = write.start_run(engine, config=cfg, code_version="t")
    stored = read.get_run(engine, run_id)["config"]
    assert "hunter2" not in str(stored)
    assert stored["clinical"]["url"] == "postgresql://reader:***@db/clinic"


def test_z_round_trips_exactly_through_both_write_paths(engine):
    """Bulk path (write_run_results) and upsert path (write_latents) store the same doubles."""
    hard = [0.1 + 0.2, -0.0, 5e-324, 1e-300, 1.7976931348623157e308, -123456.789e-7, 1 / 3]
    run_id = write.start_run(engine, config={}, code_version="t")
    write.write_run_results(engine, run_id, edges=[], latents=[LatentRow("a", "p", hard)])
    write.write_latents(engine, run_id, [LatentRow("b", "p", list(reversed(hard)))])
    back = {r["image_key"]: r["z"] for r in read.read_latents(engine, run_id)}
    assert back["a"] == hard and back["b"] == list(reversed(hard))
    assert all(type(v) is float for v in back["a"])


def test_keep_alive_advances_heartbeat(sqlite_url):
    eng = open_results(sqlite_url)
    try:
        run_id = write.start_run(eng, config={}, code_version="t")
        first = read.get_run(eng, run_id)["heartbeat_at"]
        with write.keep_alive(eng, run_id, every_s=0.05):
            deadline = time.monotonic() + 10
            while read.get_run(eng, run_id)["heartbeat_at"] == first:
                assert time.monotonic() < deadline, "no heartbeat within 10 s"
                time.sleep(0.05)
        assert read.get_run(eng, run_id)["heartbeat_at"] > first
    finally:
        eng.dispose()


def test_failing_row_detail_never_reaches_the_message(engine):
    """PostgreSQL's DETAIL ("Failing row contains (...)") would quote the patient_key."""
    import traceback

    bad = image(0, modality=None, patient_key=CANARY)  # NOT NULL violation
    with pytest.raises(ResultsIntegrityError) as info:
        write.upsert_images(engine, [bad])
    printed = "".join(traceback.format_exception(info.value))
    assert CANARY not in str(info.value) and CANARY not in printed
    assert "cmcl_images" in str(info.value) or "modality" in str(info.value)
    assert count(engine, "cmcl_images") == 0
