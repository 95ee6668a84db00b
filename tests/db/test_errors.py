"""One user-error type for every layer; only failures that can clear up count as transient."""

from __future__ import annotations

import pytest

from db.errors import (
    DatabaseUnavailable,
    ResultsDatabaseError,
    ResultsIntegrityError,
    UserError,
    is_transient,
)
from pipeline.errors import ConfigError, DataError


def test_every_user_error_is_one_type_with_problem_and_fix():
    for cls in (ConfigError, DataError, DatabaseUnavailable, ResultsDatabaseError):
        err = cls("the thing is wrong", "do this")
        assert isinstance(err, UserError)
        assert (err.problem, err.fix, err.transient) == ("the thing is wrong", "do this", False)
        assert str(err) == "the thing is wrong\n  fix: do this"
    assert issubclass(ResultsIntegrityError, DatabaseUnavailable)
    assert str(UserError("no fix")) == "no fix"
    assert UserError("down", transient=True).transient


@pytest.mark.parametrize(
    "message",
    [
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused',
        "connection timeout expired",
        "FATAL:  the database system is starting up",
        "server closed the connection unexpectedly",
        "database is locked",
    ],
)
def test_transient_driver_messages(message):
    assert is_transient(message)


@pytest.mark.parametrize(
    "message",
    [
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
        'database "clinic" does not exist',
        'FATAL:  password authentication failed for user "reader"',
        'FATAL:  role "reader" does not exist',
        "unable to open database file",
        "attempt to write a readonly database",
        "syntax error at or near SELEC",
        "",
    ],
)
def test_permanent_or_unknown_driver_messages(message):
    assert not is_transient(message)
