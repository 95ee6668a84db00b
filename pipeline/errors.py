"""User-facing errors: each names the problem and the fix, and never carries patient data."""

from __future__ import annotations


class CMCLUserError(Exception):
    """An error the user can fix (bad config, bad input, unreachable service).

    The CLI prints ``str(err)`` without a traceback and exits non-zero. Messages must
    name the offending thing and the fix, and must never contain patient data
    (PatientID, names, dates, UIDs, file paths that embed them, SQL parameters).
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class ConfigError(CMCLUserError):
    """The configuration file is missing, unreadable or invalid."""


class DataError(CMCLUserError):
    """Input data (clinical records, images) cannot be used as given."""


class DatabaseUnavailable(CMCLUserError):  # noqa: N818 - public name, reads as a state
    """A database (clinical source or results) cannot be reached or opened."""
