"""What each ``cmcl`` command does and prints: one function per command, rich tables here only.

The pipeline returns plain dataclasses; these functions call it, print what a user needs (a
table, the next step) and return the result for tests. User errors propagate as
:class:`db.errors.UserError` and are printed once by the CLI (:mod:`flows.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.settings import temporary_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from db.engine import results_engine, upgrade
from db.read import catalog_count, get_run, latest_run, list_runs, quarantine_counts, read_edges
from db.urls import safe_url
from flows.compute import check_compute
from flows.console import protect_handlers
from flows.demo import DemoResult, run_demo
from flows.ingest_engine import ingest_pool
from flows.serve import serve_deployment
from flows.train import cmcl_flow
from pipeline.clinical.connection import check_clinical_source
from pipeline.config import Config, expand_env, load_config
from pipeline.errors import DataError
from pipeline.ingest.scan import INGEST_CACHE_MIB, IngestResult, ingest
from pipeline.model.score import ScoreResult, score_run
from pipeline.pacs.connect import check_source
from pipeline.pseudonyms import pseudonym_key_from_env
from pipeline.synthetic.cohort import CohortInfo, make_synthetic_cohort, realism_options

# The temporary local API (no PREFECT_API_URL) gets 20 s to start by default; a busy machine
# needs more. Its telemetry heartbeat only adds SQLite lock contention. Values set in the
# environment or profile still win.
_PREFECT_DEFAULTS = {
    "server.ephemeral.startup_timeout_seconds": 180,
    "server.analytics_enabled": False,
}
_RUNS_HINT = "list the runs and their ids with `cmcl runs --config FILE`"


def _console() -> Console:
    """stdout; plain lines are not wrapped (paths and commands stay copyable)."""
    return Console(soft_wrap=True)


def _table(title: str, *columns: str, counts: tuple[str, ...] = ()) -> Table:
    """A table whose title stays on one line (rich wraps a title at the table's width); the
    ``counts`` columns are right-aligned; values fold, never end in an ellipsis."""
    text = Text(title, style="table.title", no_wrap=True, overflow="ignore")
    table = Table(title=text, title_justify="left")
    for col in columns:  # a narrow terminal folds a long value onto more lines, never cuts it
        table.add_column(col, justify="right" if col in counts else "left", overflow="fold")
    return table


def ingest_command(config: Path, console: Console | None = None) -> IngestResult:
    """``cmcl ingest --config FILE``: ingest with a progress bar, then a summary table.

    Raises:
        ConfigError: unusable config, or ``CMCL_PSEUDONYM_KEY`` missing.
        DataError: dicom.source is empty while the database lists files from it.
        DatabaseUnavailable: the results database cannot be opened.
        UserError: the PACS or the Dask scheduler cannot be used.
    """
    console = console or _console()
    cfg = load_config(config)
    key = pseudonym_key_from_env()
    check_compute(cfg.compute)  # an unreachable Dask scheduler, before any work
    check_source(cfg.dicom)  # a PACS that refuses us or cannot be reached, before any work
    with results_engine(expand_env(cfg.results.url), INGEST_CACHE_MIB) as engine:
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("ingesting DICOM files", total=None)
            result = ingest(
                cfg, key=key, engine=engine, pool=ingest_pool(cfg.compute),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                load_units=False,  # only counted below
            )  # fmt: skip
        in_catalog, in_quarantine = catalog_count(engine), quarantine_counts(engine)
    counts = ("files (this scan)", "in the database")
    table = _table(
        f"cmcl ingest: {result.found} files in {result.seconds:.1f} s", "status", *counts,
        counts=counts,
    )  # fmt: skip
    table.add_row("catalogued (new or changed)", str(result.catalogued), str(in_catalog))
    table.add_row("unchanged (already up to date)", str(result.unchanged), "-")
    table.add_row("forgotten (no longer in dicom.source)", str(result.forgotten), "-")
    for reason in sorted(set(result.quarantined) | set(in_quarantine)):
        n_scan, n_db = result.quarantined.get(reason, 0), in_quarantine.get(reason, 0)
        table.add_row(f"quarantined: {reason}", str(n_scan), str(n_db))
    table.add_row("training images (MR series count once)", str(len(result.images)), "-")
    console.print(table)
    console.print(
        "'in the database': images in the catalog (cmcl_images) and files in the quarantine "
        "(cmcl_quarantine) after this scan"
    )
    return result


def check_sources(cfg: Config) -> None:
    """Fail fast, before Prefect starts: the clinical database, the PACS (when dicom.source is
    one) and the results database open.

    Raises:
        ConfigError, DatabaseUnavailable, UserError: a wrong URL, a database that does not
            exist, wrong credentials, a server that is down.
    """
    check_clinical_source(cfg.clinical.url)
    check_source(cfg.dicom)
    with results_engine(expand_env(cfg.results.url)):
        pass


def run_command(config: Path, console: Console | None = None) -> dict[str, Any]:
    """``cmcl run --config FILE``: run the flow locally, print the edges and the report path.

    Config, pseudonym key and both databases are checked before Prefect starts (a temporary
    local API when ``PREFECT_API_URL`` is unset), so a user error costs no start-up time.

    Raises:
        ConfigError, DataError, DatabaseUnavailable: a user-fixable problem.
    """
    console = console or _console()
    path = Path(config).resolve()
    cfg = load_config(path)
    pseudonym_key_from_env()
    check_sources(cfg)
    protect_handlers()  # Prefect installed its own console handler when flows.train loaded
    with temporary_settings(set_defaults=_PREFECT_DEFAULTS):
        out = cmcl_flow(config=str(path))
    console.print(_edge_table(f"cmcl run {out['run_id']}: edges", out["edge_rows"]))
    console.print(CLAIMS_NOTE)
    if note := latent_note(out["latent_roles"]):
        console.print(note)
    console.print(f"device: {out['device']}   wall time: {out['seconds']:.0f} s")
    console.print(f"report: {out['report']}")
    return out


def edges_command(
    config: Path, run_id: int | None = None, console: Console | None = None
) -> list[dict]:
    """``cmcl edges --config FILE [--run ID]``: a run's edges as a table.

    Raises:
        DataError: no succeeded run yet, or no run with this id.
    """
    cfg = load_config(config)
    shown = safe_url(cfg.results.url)
    with results_engine(expand_env(cfg.results.url)) as engine:
        if run_id is None:
            run = latest_run(engine)
            if run is None:
                raise DataError(
                    f"no succeeded run yet in the results database {shown}",
                    "run the pipeline first: `cmcl run --config FILE`",
                )
        else:
            run = get_run(engine, run_id)
            if run is None:
                ids = [r["id"] for r in list_runs(engine, limit=5)]
                held = f"its newest run ids are {ids}" if ids else "it holds no run yet"
                raise DataError(
                    f"run {run_id} does not exist in the results database {shown} ({held})",
                    f"pass one of those ids to --run; {_RUNS_HINT}",
                )
        rows = read_edges(engine, int(run["id"]))
    con = console or _console()
    con.print(_edge_table(f"run {run['id']} ({run['status']}): {len(rows)} edges", rows))
    con.print(CLAIMS_NOTE)
    if note := latent_note((run.get("metrics") or {}).get("latent_roles", {})):
        con.print(note)
    return rows


def latent_note(roles: dict[str, str]) -> str | None:
    """One line naming the latents on no clinical edge (None when every latent is on one)."""
    other = {z: r for z, r in roles.items() if r != "clinical"}
    if not other:
        return None
    listed = ", ".join(f"{z} {r}" for z, r in other.items())
    return (
        f"latents on no clinical edge: {listed} (nuisance = image variation no clinical variable "
        "explains, e.g. positioning or scanner; unused = nearly constant); not findings"
    )


CLAIMS_NOTE = (
    "orientation: knowledge = fixed by a role in the config's knowledge:, data = decided by the "
    "data, undetermined = an adjacency whose direction the model cannot tell (not a claim); "
    "stability = share of resampled fits with the edge, agreement = share of those with this "
    "direction"
)


def _fraction(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _edge_table(title: str, rows: list[dict[str, Any]], truth: set | None = None) -> Table:
    """Edges as a table: source, target, weight, orientation, stability, agreement (and,
    with ``truth``, whether the edge is in the true graph: yes, reversed or no)."""
    cols = ["source", "target", "weight", "orientation", "stability", "agreement"]
    table = _table(title, *cols, *(["truth"] if truth is not None else []),
                   counts=("weight", "stability", "agreement"))  # fmt: skip
    for r in rows:
        cells = [
            r["source"], r["target"], f"{r['weight']:+.3f}", r.get("orientation") or "-",
            _fraction(r.get("stability")), _fraction(r.get("direction_agreement")),
        ]  # fmt: skip
        if truth is not None:
            st = (r["source"], r["target"])
            cells.append("yes" if st in truth else "reversed" if st[::-1] in truth else "no")
        table.add_row(*cells)
    return table


def runs_command(config: Path, limit: int = 20, console: Console | None = None) -> list[dict]:
    """``cmcl runs --config FILE [--limit N]``: the newest runs with their ids and status."""
    cfg = load_config(config)
    with results_engine(expand_env(cfg.results.url)) as engine:
        runs = list_runs(engine, limit=limit)
    table = _table(
        f"runs in {safe_url(cfg.results.url)} (newest first)",
        "id", "status", "started (UTC)", "images", "patients", "device", "error",
    )  # fmt: skip
    for r in runs:
        started = r["started_at"].strftime("%Y-%m-%d %H:%M:%S") if r["started_at"] else ""
        error = (r["error"] or "").splitlines()[0][:60] if r["error"] else ""
        table.add_row(
            str(r["id"]), r["status"], started, str(r["n_images"] or ""),
            str(r["n_patients"] or ""), r["device"] or "", error,
        )  # fmt: skip
    (console or _console()).print(table)
    return runs


def serve_command(config: Path, cron: str | None) -> None:
    """``cmcl serve --config FILE [--cron EXPR]``: serve the deployment cmcl/train."""
    serve_deployment(config, cron)


def score_command(config: Path, run_id: int, console: Console | None = None) -> ScoreResult:
    """``cmcl score --config FILE --run ID``: score new images and print the counts."""
    cfg = load_config(config)
    key = pseudonym_key_from_env()
    with results_engine(expand_env(cfg.results.url)) as engine:
        res = score_run(cfg, run_id, key=key, engine=engine)
    (console or _console()).print(
        f"run {res.run_id}: {res.scored} new images scored with {res.provider} "
        f"({res.already} already had latents, {res.joined} joined images in all)"
    )
    return res


def synthetic_command(
    out: Path,
    *,
    n_patients: int,
    setting: str,
    seed: int,
    mr_patients: int,
    image_size: int,
    realism: str = "clean",
    jitter: float | None = None,
    overlap: float | None = None,
    latent_correlation: float | None = None,
    sites: int | None = None,
    console: Console | None = None,
) -> CohortInfo:
    """``cmcl synthetic``: write a synthetic cohort and say what it holds.

    ``realism`` names a preset of ``cmcl_core.simulate.REALISM_PRESETS``; ``jitter``,
    ``overlap``, ``latent_correlation`` and ``sites`` (``n_sites``) override its values
    when given.

    Raises:
        ConfigError: an unknown preset, an invalid option, an unusable folder.
    """
    options = realism_options(
        realism,
        jitter=jitter,
        overlap=overlap,
        latent_correlation=latent_correlation,
        n_sites=sites,
    )
    info = make_synthetic_cohort(
        out,
        n_patients=n_patients,
        setting=setting,
        seed=seed,
        mr_patients=mr_patients,
        image_size_dicom=image_size,
        realism=options,
    )
    (console or _console()).print(info.describe(), highlight=False)
    return info


def demo_command(workdir: Path, console: Console | None = None) -> DemoResult:
    """``cmcl demo``: run the demo and print the learned edges beside the true graph."""
    r = run_demo(workdir)
    con = console or _console()
    true = set(r.true_edges)
    title = f"demo run {r.run_id}: edges (latents matched to the truth)"
    table = _edge_table(title, r.found_rows, truth=true)
    found = {(x["source"], x["target"]) for x in r.found_rows}
    for s, t in sorted(true - found - {(b, a) for a, b in found}):
        table.add_row(s, t, "", "", "", "", "missed")
    con.print(table)
    sc = r.scores
    con.print(
        f"true edges: {len(true)}   SHD {sc['shd']:.0f} (undetermined as undirected: "
        f"{sc['shd_cpdag']:.0f})   TPR {sc['tpr']:.2f}   FDR {sc['fdr']:.2f}   wrong claims "
        f"{sc['wrong_claims']:.0f} of {sc['claims']:.0f}   latent MCC {sc['mcc']:.2f}   "
        f"wall time {r.seconds:.0f} s"
    )
    con.print(CLAIMS_NOTE)
    con.print(f"report: {r.report}")
    con.print(f"results database: {r.results_db} (replaced by the next demo in this folder)")
    if r.fresh_key:
        con.print(
            "pseudonym key: made for this demo only; a re-run makes a new one, so image keys "
            "and latent names differ between demos (set CMCL_PSEUDONYM_KEY to keep them)"
        )
    return r


def db_upgrade_command(config: Path, console: Console | None = None) -> str:
    """``cmcl db upgrade --config FILE``: migrate the results database; returns the revision."""
    cfg = load_config(config)
    revision = upgrade(expand_env(cfg.results.url))
    (console or _console()).print(
        f"results database {safe_url(cfg.results.url)} is at revision {revision}"
    )
    return revision
