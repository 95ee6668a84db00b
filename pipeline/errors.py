"""The pipeline's user errors: a bad configuration, or data that cannot be used as given.

Both derive from :class:`db.errors.UserError` (problem + fix, never patient data), which the
CLI catches once; a database that cannot be reached raises :class:`db.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

from db.errors import UserError


class ConfigError(UserError):
    """The configuration file, an option or the environment is missing, unreadable or invalid."""


class DataError(UserError):
    """Input data (clinical records, images, a run's artifacts) cannot be used as given."""
