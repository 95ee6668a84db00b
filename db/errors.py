"""Errors raised by the results database package.

``db`` does not import ``pipeline`` (imports go ``flows/pipeline -> db``), so it has its own
error type; the pipeline maps :class:`ResultsDatabaseError` to its ``DatabaseUnavailable``
user error, e.g. ``DatabaseUnavailable(err.problem, err.fix)``.

Messages never contain a database password, SQL parameters or values from the rows being
written (the engine runs with ``hide_parameters=True`` and driver messages are cut to their
first line, which for PostgreSQL drops the ``DETAIL: Key (...)=(...)`` part).
"""

from __future__ import annotations


class ResultsDatabaseError(Exception):
    """The results database cannot be opened, migrated or written.

    Attributes:
        problem: what failed, naming the database (URL with the password hidden).
        fix: what the user can do about it, or None.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class ResultsIntegrityError(ResultsDatabaseError):
    """A write violated a constraint or a column type (duplicate key, missing run, too long)."""
