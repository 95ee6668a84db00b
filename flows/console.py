"""Logging for the command line: one handler on stderr, PHI redacted, no traceback for a
user error.

Library code never configures logging (STYLE.md); the CLI does it here. Prefect replaces the
root logger's handlers with its own console handler when a flow module is imported, so
:func:`protect_handlers` runs again after that: it puts the PHI filter
(:class:`pipeline.redact.PhiLogFilter`) and :class:`UserErrorFilter` on every handler of the
root logger and of Prefect's loggers.
"""

from __future__ import annotations

import logging
import sys

from db.errors import UserError
from pipeline.redact import PhiLogFilter

# (the PACS clients log request URLs, which carry UIDs, at INFO/DEBUG; the PHI filter redacts
# UIDs anyway, and these lines say nothing a user needs)
_QUIET = ("httpx", "httpcore", "alembic", "matplotlib", "PIL", "onnxscript", "onnx_ir",
          "dicomweb_client", "urllib3", "pynetdicom")  # fmt: skip
_PREFECT_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra")


class UserErrorFilter(logging.Filter):
    """Drops the traceback of a record whose exception is a :class:`db.errors.UserError`.

    Prefect logs every failed task and flow run with its traceback; for an error the user can
    fix (a wrong database, a bad config) the message is the whole story, and the CLI prints it
    once more as ``error: ... fix: ...``. Other exceptions (bugs) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
            record.exc_text = None
        return True


def protect_handlers() -> None:
    """Add the user-error and PHI filters to every handler of the root and Prefect loggers."""
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in _PREFECT_LOGGERS]
    for handler in {h for lg in loggers for h in lg.handlers}:
        kinds = {type(f) for f in handler.filters}
        for flt in (UserErrorFilter, PhiLogFilter):  # in this order: drop, then redact
            if flt not in kinds:
                handler.addFilter(flt())


def setup_cli_logging(verbose: bool) -> None:
    """Log to stderr (DEBUG with ``verbose``, else INFO), filtered; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    protect_handlers()
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
