"""Benchmark: writing a run's latents to the results database (SQLite and PostgreSQL).

Measures ``db.write.write_run_results`` with N latent rows (default 100,000, m = 16) plus a few
edges, on a fresh SQLite file and a fresh PostgreSQL database, against a naive ORM loop
(one ORM ``add`` per row, one commit) on 10,000 rows, reporting seconds and rows/s.

Usage (PostgreSQL is skipped when no server URL is given)::

    .venv/bin/python benchmarks/db_write.py --pg-url postgresql://postgres@127.0.0.1:5432/test

The PostgreSQL URL is an admin connection: a temporary database is created and dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.engine import open_results
from db.models import Latent
from db.records import EdgeRow, LatentRow, VariableRow
from db.write import start_run, write_run_results


def make_latents(n: int, m: int, seed: int = 0) -> list[LatentRow]:
    rng = random.Random(seed)
    return [
        LatentRow(
            hashlib.sha256(f"img{i}".encode()).hexdigest(),
            hashlib.sha256(f"pat{i // 3}".encode()).hexdigest(),
            [rng.gauss(0.0, 1.0) for _ in range(m)],
        )
        for i in range(n)
    ]


def bench_helper(url: str, latents: list[LatentRow], m: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one write_run_results call with all latents (after an open)."""
    engine = open_results(url)
    try:
        run_id = start_run(engine, config={"bench": True}, code_version="bench")
        variables = [VariableRow("u", "clinical", "binary", 0)]
        variables += [VariableRow(f"z{j}", "latent", "latent", 1 + j) for j in range(m)]
        edges = [EdgeRow("u", f"z{j}", 0.5, "clinical", "latent") for j in range(m)]
        t0, c0 = time.perf_counter(), time.process_time()
        write_run_results(engine, run_id, edges=edges, latents=latents, variables=variables)
        seconds = time.perf_counter() - t0, time.process_time() - c0
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT COUNT(*) FROM cmcl_latents WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        assert stored == len(latents), "row count mismatch"
        return seconds
    finally:
        engine.dispose()


def bench_naive(url: str, latents: list[LatentRow]) -> tuple[float, float]:
    """(wall, CPU) seconds of the naive ORM way: one ORM add per row, one commit."""
    engine = open_results(url)
    try:
        run_id = start_run(engine, config={"bench": True}, code_version="naive")
        t0, c0 = time.perf_counter(), time.process_time()
        with Session(engine) as orm:
            for r in latents:
                orm.add(
                    Latent(
                        run_id=run_id, image_key=r.image_key, patient_key=r.patient_key, z=list(r.z)
                    )
                )
            orm.commit()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        engine.dispose()


class TempPostgres:
    """A throw-away database on the server at ``admin_url``."""

    def __init__(self, admin_url: str):
        u = sa.make_url(admin_url)
        if u.drivername in ("postgresql", "postgres"):
            u = u.set(drivername="postgresql+psycopg")
        self.admin = sa.create_engine(u, isolation_level="AUTOCOMMIT")
        self.name = f"cmcl_bench_{uuid.uuid4().hex[:10]}"
        self.url = u.set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> str:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.url

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="latent rows for write_run_results")
    ap.add_argument("--m", type=int, default=16, help="latent dimension")
    ap.add_argument("--naive-n", type=int, default=10_000, help="rows for the naive ORM loop")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("CMCL_TEST_POSTGRES_URL"),
        help="PostgreSQL admin URL (default: $CMCL_TEST_POSTGRES_URL)",
    )
    args = ap.parse_args()

    latents = make_latents(args.n, args.m)
    naive = latents[: args.naive_n]
    results: list[tuple[str, str, int, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        a, b = f"sqlite:///{Path(tmp) / 'a.db'}", f"sqlite:///{Path(tmp) / 'b.db'}"
        results.append(("sqlite", "write_run_results", args.n, bench_helper(a, latents, args.m)))
        results.append(("sqlite", "naive ORM add loop", len(naive), bench_naive(b, naive)))
    if args.pg_url:
        with TempPostgres(args.pg_url) as url:
            results.append(
                ("postgresql", "write_run_results", args.n, bench_helper(url, latents, args.m))
            )
        with TempPostgres(args.pg_url) as url:
            results.append(
                ("postgresql", "naive ORM add loop", len(naive), bench_naive(url, naive))
            )
    else:
        print("PostgreSQL skipped: pass --pg-url or set CMCL_TEST_POSTGRES_URL")

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nlatent rows, m = {args.m}; {os.cpu_count()} CPUs, load average {load}")
    print("wall = elapsed seconds; cpu = this process's CPU seconds (excludes the PG server)")
    print(f"{'backend':<11} {'method':<20} {'rows':>7} {'wall s':>7} {'cpu s':>7} {'rows/s':>8}")
    for backend, method, n, (wall, cpu) in results:
        print(f"{backend:<11} {method:<20} {n:>7} {wall:>7.2f} {cpu:>7.2f} {n / wall:>8.0f}")


if __name__ == "__main__":
    main()
