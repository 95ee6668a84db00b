"""The `cmcl` command line.

Every command is thin: it parses options and calls one function of :mod:`flows.commands`.
Errors the user can fix (:class:`db.errors.UserError`) are caught once, by :func:`user_errors`:
``error: <problem>`` and the fix, no traceback. Exit codes, for every command: 0 success;
1 an unexpected error (a bug: the traceback is printed); 2 a user error (bad config or option,
missing pseudonym key, unusable data, a database that cannot be reached); 130 interrupted.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from db.errors import UserError
from flows.console import setup_cli_logging

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# rich_markup_mode=None: plain help. Typer's rich help prints every flag, --help included, as
# taking a "<bool>" value; the plain formatter shows flags as flags.
app = typer.Typer(
    name="cmcl",
    help="CMCL: causal structure between clinical variables and image features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file (see README).", show_default=False)
]


def _commands() -> ModuleType:
    """The command implementations, with the CLI's logging put back after importing them.

    Deferred: they import torch, MONAI and Prefect (seconds), which ``cmcl --help`` does not
    need. Importing Prefect replaces the root log handler (set up by :func:`_main`), so the
    CLI's handler goes back on afterwards, at the level the user asked for.
    """
    verbose = logging.getLogger().level == logging.DEBUG
    from flows import commands

    setup_cli_logging(verbose)
    return commands


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a UserError as ``error: problem`` + fix and exit 2; an interrupt exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None

    return wrapper


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    setup_cli_logging(verbose)


# --- commands ------------------------------------------------------------------------------


@app.command()
@user_errors
def demo(
    workdir: Annotated[
        Path,
        typer.Option(
            help="Folder for the synthetic cohort, results database (results.db) and reports; "
            "an earlier demo's results and reports there are replaced."
        ),
    ] = Path("cmcl-demo"),
) -> None:
    """Run the whole pipeline on a synthetic cohort and score it.

    Writes a synthetic cohort with a known causal graph into --workdir, runs `cmcl run` on it
    and prints the learned edges beside the true ones.
    """
    _commands().demo_command(workdir)


@app.command()
@user_errors
def synthetic(
    out: Annotated[
        Path, typer.Option(help="Folder for the cohort (new, empty or written by this command).")
    ] = Path("cmcl-synthetic"),
    n_patients: Annotated[int, typer.Option(help="Simulated patients.")] = 500,
    setting: Annotated[
        str,
        typer.Option(
            help="Paper graph edges/nodes (e.g. 4/10), cxr (a chest X-ray graph) or brain "
            "(glioma MRI: one MR series per patient, tumour features at one location)."
        ),
    ] = "4/10",
    seed: Annotated[int, typer.Option(help="Seed; the same seed reproduces every byte.")] = 0,
    mr_patients: Annotated[int, typer.Option(help="Patients written as MR series.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the stored images, in pixels.")] = 64,
    realism: Annotated[
        str,
        typer.Option(
            metavar="<preset>",
            help="Realism preset: clean, pose, overlap, correlated, site or all (the four "
            "options below at 1, 3 sites); the options below override it.",
        ),
    ] = "clean",
    jitter: Annotated[
        float | None,
        typer.Option(
            help="Patient positioning jitter (1: shift sd 5% of the side, rotation sd 5 "
            "degrees, zoom sd 5%).",
            show_default=False,
        ),
    ] = None,
    overlap: Annotated[
        float | None,
        typer.Option(
            help="Spread of each latent over neighbouring regions, in cells (0: one region "
            "per latent).",
            show_default=False,
        ),
    ] = None,
    latent_correlation: Annotated[
        float | None,
        typer.Option(
            metavar="<w>",
            help="Weight w of a hidden factor shared by half of the latents (0: none).",
            show_default=False,
        ),
    ] = None,
    sites: Annotated[
        int | None,
        typer.Option(
            help="Scanner sites (0: none): a categorical clinical column 'site' that sets "
            "image contrast and causes one latent.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a synthetic DICOM cohort with a known causal graph.

    DICOM files (a few broken), a clinical SQLite database, config.yaml and truth.json.
    """
    _commands().synthetic_command(
        out,
        n_patients=n_patients,
        setting=setting,
        seed=seed,
        mr_patients=mr_patients,
        image_size=image_size,
        realism=realism,
        jitter=jitter,
        overlap=overlap,
        latent_correlation=latent_correlation,
        sites=sites,
    )


@app.command()
@user_errors
def ingest(config: ConfigOpt) -> None:
    """Catalog or quarantine every file under dicom.source.

    Validates, de-identifies and preprocesses new or changed files; forgets files that are no
    longer there; prints counts per status and quarantine reason.
    """
    _commands().ingest_command(config)


@app.command()
@user_errors
def run(config: ConfigOpt) -> None:
    """The main job: ingest, join, train, export, report (flow cmcl).

    Runs the Prefect flow cmcl locally: ingest, load clinical records, join, train, export
    ONNX, write the report and the results; prints the learned edges and the report path.
    """
    _commands().run_command(config)


@app.command()
@user_errors
def edges(
    config: ConfigOpt,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Run id (default: the latest succeeded run).")
    ] = None,
) -> None:
    """Print a run's learned edges: source, target, weight, direction."""
    _commands().edges_command(config, run_id)


@app.command()
@user_errors
def runs(
    config: ConfigOpt,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
) -> None:
    """List the runs: id, status, start, counts, error."""
    _commands().runs_command(config, limit)


@app.command()
@user_errors
def serve(
    config: ConfigOpt,
    cron: Annotated[
        str | None, typer.Option(help='Cron schedule, e.g. "0 2 * * *" (default: on demand).')
    ] = None,
) -> None:
    """Serve the Prefect deployment cmcl/train (needs a server).

    Registers the deployment against the server at PREFECT_API_URL and runs its flow runs.
    """
    _commands().serve_command(config, cron)


@app.command()
@user_errors
def score(
    config: ConfigOpt,
    run_id: Annotated[int, typer.Option("--run", help="The trained run whose encoder to use.")],
) -> None:
    """Latents for new images with a run's ONNX encoder.

    Ingests dicom.source and scores the joined images the run has no latent for (no
    retraining).
    """
    _commands().score_command(config, run_id)


db_app = typer.Typer(name="db", help="Results database maintenance.", no_args_is_help=True)
app.add_typer(db_app)


@db_app.command("upgrade")
@user_errors
def db_upgrade(config: ConfigOpt) -> None:
    """Create or migrate the results database (results.url) to the newest schema."""
    _commands().db_upgrade_command(config)


#: OpenMP's wait policy for torch's CPU threads unless the environment sets one: threads that
#: sleep at a barrier instead of spinning. On a shared or oversubscribed node spinning threads
#: burn the cores the others wait for: under a load of 10-14 on 2 cores, 2-thread epochs took
#: 77 s once and 3.6-9.7 s otherwise with the default policy, 2.3-2.6 s with PASSIVE
#: (benchmarks/results/two_demos.md).
OMP_WAIT_POLICY = "PASSIVE"


def main() -> None:
    """Console-script entry point."""
    # The entry point, not library code: OpenMP reads this once, when torch is first imported
    # (the commands import it lazily, after this line), and child processes inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
