"""Errors a user can fix, shared by every package: each names the problem and the fix.

The one base class, :class:`UserError`, lives here because ``db`` is the lowest package that
both ``pipeline`` and ``flows`` import (imports go ``flows -> pipeline -> db``; ``db`` imports
neither, and ``cmcl_core`` knows nothing of users). This module imports nothing, so any layer
can raise the same type and the CLI catches it in one place. Subclasses: ``ConfigError`` and
``DataError`` (:mod:`pipeline.errors`), :class:`DatabaseUnavailable` and the results
database's :class:`ResultsDatabaseError` (here).

Messages never contain patient data, a database password, SQL parameters or values from the
rows being written (the engines run with ``hide_parameters=True`` and driver messages are cut
to their first line, which for PostgreSQL drops the ``DETAIL: Key (...)=(...)`` part).
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (bad config, bad input, unreachable service).

    The CLI prints ``error: <problem>`` and the fix, without a traceback, and exits with
    status 2. Messages must name the offending thing and the fix, and must never contain
    patient data (PatientID, names, dates, UIDs, file paths that embed them, SQL parameters).

    Attributes:
        problem: what is wrong, naming the thing (a config key, a database without password).
        fix: what the user can do about it, or None.
        transient: True when the same call may succeed later unchanged (a refused connection,
            a timeout); the flow retries only such errors.
    """

    def __init__(self, problem: str, fix: str | None = None, *, transient: bool = False):
        self.problem = problem
        self.fix = fix
        self.transient = transient
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class DatabaseUnavailable(UserError):  # noqa: N818 - public name, reads as a state
    """A database (clinical source or results) cannot be reached, opened or used."""


class ResultsDatabaseError(DatabaseUnavailable):
    """The results database cannot be opened, migrated or written."""


class ResultsIntegrityError(ResultsDatabaseError):
    """A write violated a constraint or a column type (duplicate key, missing run, too long)."""


# Driver messages (first line) of failures that can clear up by themselves; anything else (a
# database or role that does not exist, a wrong password, a missing file) needs the user.
_TRANSIENT = (
    "connection refused",
    "timeout",
    "timed out",
    "server closed the connection",
    "connection reset",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
    "database is locked",
    "could not receive data",
    "could not send data",
)
_PERMANENT = (
    "does not exist",
    "authentication failed",
    "password",
    "permission denied",
    "no such",
    "unable to open",
    "read-only",
    "readonly",
)


def is_transient(message: str) -> bool:
    """Whether a driver's error message describes a failure that may clear up on a retry.

    Args:
        message: the driver's message (its first line is enough).

    Returns:
        True for a refused or timed-out connection, a server starting up or overloaded, a busy
        SQLite file; False for anything a retry cannot fix (unknown database or role, wrong
        credentials, missing file, a read-only database) and for unknown messages.
    """
    text = message.lower()
    return any(t in text for t in _TRANSIENT) and not any(p in text for p in _PERMANENT)
