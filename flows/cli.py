"""The `cmcl` command line.

Every command is thin: it loads the config, calls one pipeline/flow function and prints a
summary. Errors the user can fix (``UserError``) are printed as a message naming the
problem and the fix, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from db.errors import UserError

app = typer.Typer(
    name="cmcl",
    help="CMCL: causal structure between clinical variables and image features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file (see README).", show_default=False)
]


def _setup_logging(verbose: bool) -> None:
    """Configure the root logger for the CLI process (library code never does this)."""
    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    try:  # the PHI filter lives with de-identification; keep the CLI usable without it
        from pipeline.redact import PhiLogFilter

        handler.addFilter(PhiLogFilter())
    except ImportError:  # pragma: no cover - only while the module does not exist yet
        pass
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "alembic", "matplotlib", "PIL", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into a clean message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _setup_logging(verbose)


# --- commands ------------------------------------------------------------------------------
# Each command delegates to one function in pipeline/ or flows/; keep them thin.


@app.command()
@user_errors
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Folder for the synthetic cohort, databases and report.")
    ] = Path("cmcl-demo"),
) -> None:
    """Synthetic cohort with a known causal graph, run end to end, compare with the truth."""
    from flows.demo import run_demo

    run_demo(workdir)


@app.command()
@user_errors
def synthetic(
    out: Annotated[
        Path, typer.Option(help="Folder for the cohort (new, empty or our own).")
    ] = Path("cmcl-synthetic"),
    n_patients: Annotated[int, typer.Option(help="Simulated patients.")] = 500,
    setting: Annotated[str, typer.Option(help="Paper graph edges/nodes, e.g. 4/10.")] = "4/10",
    seed: Annotated[int, typer.Option(help="Seed; the same seed reproduces every byte.")] = 0,
    mr_patients: Annotated[int, typer.Option(help="Patients written as MR series.")] = 0,
) -> None:
    """Write a synthetic DICOM cohort + clinical SQLite database with a known causal graph."""
    from pipeline.synthetic.cohort import make_synthetic_cohort

    info = make_synthetic_cohort(
        out, n_patients=n_patients, setting=setting, seed=seed, mr_patients=mr_patients
    )
    typer.echo(info.describe())


@app.command()
@user_errors
def ingest(config: ConfigOpt) -> None:
    """Ingest dicom.source: validate, de-identify, catalog or quarantine every file."""
    from pipeline.ingest.scan import ingest_command

    ingest_command(config)


@app.command()
@user_errors
def run(config: ConfigOpt) -> None:
    """The main job: ingest, join, train, export ONNX, report, write back (Prefect flow cmcl)."""
    from flows.train import run_command

    run_command(config)


@app.command()
@user_errors
def edges(
    config: ConfigOpt,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Run id (default: the latest succeeded run).")
    ] = None,
) -> None:
    """Print a run's learned edges: source, target, weight, direction."""
    from pipeline.model.score import edges_command

    edges_command(config, run_id)


@app.command()
@user_errors
def serve(
    config: ConfigOpt,
    cron: Annotated[
        str | None, typer.Option(help='Cron schedule, e.g. "0 2 * * *" (default: on demand).')
    ] = None,
) -> None:
    """Register and serve the Prefect deployment cmcl/train (needs PREFECT_API_URL)."""
    from flows.serve import serve_deployment

    serve_deployment(config, cron)


@app.command()
@user_errors
def score(
    config: ConfigOpt,
    run_id: Annotated[int, typer.Option("--run", help="The trained run whose encoder to use.")],
) -> None:
    """Latents for newly ingested images with the run's ONNX encoder (no retraining)."""
    from pipeline.model.score import score_command

    score_command(config, run_id)


db_app = typer.Typer(name="db", help="Results database maintenance.", no_args_is_help=True)
app.add_typer(db_app)


@db_app.command("upgrade")
@user_errors
def db_upgrade(config: ConfigOpt) -> None:
    """Create or migrate the results database (results.url) to the newest schema."""
    from db.engine import upgrade
    from db.urls import safe_url
    from pipeline.config import expand_env, load_config

    cfg = load_config(config)
    revision = upgrade(expand_env(cfg.results.url))
    typer.echo(f"results database {safe_url(cfg.results.url)} is at revision {revision}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
