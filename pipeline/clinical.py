"""The clinical source: one read-only SQL query, typed and pseudonymised into a numeric table.

``load_clinical`` runs ``clinical.query`` against ``clinical.url`` (any SQLAlchemy URL; a
password only through ``${ENV}``), then

1. hashes the ``clinical.id_column`` values into pseudonymous patient keys
   (``pipeline.deid.patient_key``: HMAC-SHA256 with ``CMCL_PSEUDONYM_KEY``) and drops the raw
   ids at once, so they exist only in memory and only until hashed;
2. uses every other column of the result as a clinical variable ``u`` (a column you do not want
   is left out of the query); ``clinical.variables`` declares types, undeclared columns are
   inferred: exactly two distinct values -> binary, numeric -> continuous, anything else
   (free text, dates) is refused with a message naming the column;
3. excludes rows with a missing value (NULL, NaN or an empty string) in a used variable, and
   counts them;
4. refuses contradicting duplicate records of one patient (identical duplicates collapse).

Read-only: SQLite opens through a ``file:...?mode=ro&uri=true`` URL (a missing file is an error,
never a new empty database), PostgreSQL runs the query in a ``READ ONLY`` transaction; other
backends open plainly (give them a read-only account). The engine hides bound parameters, and
neither the query text nor any value is logged: only counts and column names.

Binary coding (deterministic, stored in ``ClinicalTable.levels``): booleans False/True -> 0/1;
numbers in ascending order (0/1 -> 0/1, 1/2 -> 0/1); strings of a known pair
(no/yes, n/y, false/true, f/t, negative/positive, neg/pos, absent/present, off/on, 0/1, case and
surrounding spaces ignored) -> 0/1; any other pair of strings in sorted order. Categorical
variables become integer codes 0..K-1 in sorted level order (numbers numerically); the DAG
learner one-hot expands them. Text values are compared trimmed and case-insensitively, and their
level labels are kept in that case-folded form ("Yes" and "yes " are one level, "yes").
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from pipeline.config import ClinicalConfig, VariableType, expand_env
from pipeline.deid import patient_key
from pipeline.errors import ConfigError, DatabaseUnavailable, DataError

logger = logging.getLogger(__name__)

_FALSE_WORDS = ("no", "n", "false", "f", "negative", "neg", "absent", "off", "0")
_TRUE_WORDS = ("yes", "y", "true", "t", "positive", "pos", "present", "on", "1")
_BINARY_WORDS = dict(zip(_FALSE_WORDS, _TRUE_WORDS, strict=True))  # negative word -> positive


@dataclass(frozen=True)
class ClinicalCounts:
    """What happened to the query's rows (no patient data)."""

    rows: int  # rows the query returned
    rows_without_id: int  # id_column NULL or empty: unusable, excluded
    duplicate_rows_collapsed: int  # exact repeats of a patient's record, kept once
    excluded_missing: int  # records excluded for a missing value in a used variable
    records: int  # records kept (one per patient)
    missing_by_variable: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClinicalTable:
    """The clinical records as the estimator takes them, keyed by pseudonymous patient key.

    Attributes:
        patient_keys: HMAC-SHA256 hex digest of each record's id, one per row of ``values``.
        values: ``[n, d]`` float64; binary 0/1, categorical codes 0..K-1, continuous as is.
        u_names: the d variable (column) names, in the query's column order.
        u_types: the d types, ``"continuous" | "binary" | "categorical"``.
        levels: for binary and categorical variables, the label of each code
            (``levels[name][code]``); continuous variables are absent.
        excluded_keys: patient keys of records excluded for missing values (lets the join tell
            "no record" from "record excluded").
        counts: row accounting.
    """

    patient_keys: tuple[str, ...]
    values: np.ndarray
    u_names: tuple[str, ...]
    u_types: tuple[str, ...]
    levels: Mapping[str, tuple[str, ...]]
    excluded_keys: frozenset[str]
    counts: ClinicalCounts

    def __len__(self) -> int:
        return len(self.patient_keys)


def load_clinical(cfg: ClinicalConfig, *, key: bytes) -> ClinicalTable:
    """Run the clinical query read-only and return typed, pseudonymised records.

    Args:
        cfg: the ``clinical:`` section of the config.
        key: the pseudonym key (``CMCL_PSEUDONYM_KEY`` as bytes); must match the one used at
            ingest so that patient keys join.

    Returns:
        The records, one per patient, with ``values [n, d]``.

    Raises:
        ConfigError: the URL cannot be parsed or names an unknown backend/driver.
        DatabaseUnavailable: the database cannot be reached or opened.
        DataError: the query fails, or its result cannot be used (missing id column, free-text
            column, bad declared type, contradicting duplicates, no usable record).
    """
    columns, rows = _run_query(cfg)
    names = _variable_columns(cfg, columns)
    id_pos = columns.index(cfg.id_column)
    var_pos = [columns.index(n) for n in names]
    n_rows = len(rows)
    by_key, n_no_id = _key_records(rows, id_pos, var_pos, key)
    del rows  # the raw ids are gone from here on: only pseudonymous keys remain
    records, n_collapsed = _one_record_per_patient(by_key)
    complete, excluded, missing_by_var = _drop_incomplete(records, names)
    if not complete:
        raise DataError(
            f"no usable clinical record: {n_rows} rows returned, {n_no_id} without an id, "
            f"{len(excluded)} with a missing value",
            "check clinical.query and clinical.id_column",
        )

    values = np.empty((len(complete), len(names)), dtype=np.float64)  # [n, d]
    types: list[str] = []
    levels: dict[str, tuple[str, ...]] = {}
    for j, name in enumerate(names):
        col = [rec[j] for _, rec in complete]
        codes, vtype, labels = _encode(name, col, cfg.variables.get(name))
        values[:, j] = codes
        types.append(str(vtype))
        if labels is not None:
            levels[name] = labels

    counts = ClinicalCounts(
        rows=n_rows,
        rows_without_id=n_no_id,
        duplicate_rows_collapsed=n_collapsed,
        excluded_missing=len(excluded),
        records=len(complete),
        missing_by_variable={k: v for k, v in missing_by_var.items() if v},
    )
    logger.info(
        "clinical source: %d rows, %d records kept, %d excluded for missing values, "
        "%d without id, %d duplicate rows collapsed; variables %s",
        counts.rows,
        counts.records,
        counts.excluded_missing,
        counts.rows_without_id,
        counts.duplicate_rows_collapsed,
        ", ".join(f"{n}:{t}" for n, t in zip(names, types, strict=True)),
    )
    return ClinicalTable(
        patient_keys=tuple(k for k, _ in complete),
        values=values,
        u_names=names,
        u_types=tuple(types),
        levels=levels,
        excluded_keys=frozenset(excluded),
        counts=counts,
    )


def _variable_columns(cfg: ClinicalConfig, columns: list[str]) -> tuple[str, ...]:
    """The variables: every result column but the id; checks the id and declared columns."""
    if cfg.id_column not in columns:
        raise DataError(
            f"clinical.id_column '{cfg.id_column}' is not a column of the clinical query's "
            f"result; available columns: {', '.join(columns) or '(none)'}",
            "set clinical.id_column to the column holding the DICOM PatientID, or select it "
            "in clinical.query",
        )
    names = tuple(c for c in columns if c != cfg.id_column)
    missing_decl = [v for v in cfg.variables if v not in names]
    if missing_decl:
        raise DataError(
            f"clinical.variables declares {', '.join(missing_decl)} but the clinical query "
            f"does not return {'it' if len(missing_decl) == 1 else 'them'}; returned columns: "
            f"{', '.join(columns)}",
            "select the column in clinical.query or remove it from clinical.variables",
        )
    if not names:
        raise DataError(
            "the clinical query returns no variable besides the id column",
            "select the clinical variables (e.g. SELECT mrn, covid, age FROM ...)",
        )
    return names


def _one_record_per_patient(
    by_key: dict[str, list[tuple[Any, ...]]],
) -> tuple[list[tuple[str, tuple[Any, ...]]], int]:
    """Collapse identical repeats of a record; refuse patients with differing records."""
    n_collapsed, n_conflicting = 0, 0
    records: list[tuple[str, tuple[Any, ...]]] = []
    for pkey, recs in by_key.items():
        if len({tuple(_norm(v) for v in r) for r in recs}) > 1:
            n_conflicting += 1
        n_collapsed += len(recs) - 1
        records.append((pkey, recs[0]))
    if n_conflicting:
        raise DataError(
            f"{n_conflicting} patients have more than one differing record in the clinical "
            "query's result; which record belongs to the images is ambiguous",
            "make clinical.query return one row per patient (e.g. the visit closest to the "
            "imaging date, with DISTINCT ON / GROUP BY)",
        )
    return records, n_collapsed


def _drop_incomplete(
    records: list[tuple[str, tuple[Any, ...]]], names: Sequence[str]
) -> tuple[list[tuple[str, tuple[Any, ...]]], set[str], dict[str, int]]:
    """Split off records with a missing value; count the missing values per variable."""
    missing_by_var = {n: 0 for n in names}
    complete: list[tuple[str, tuple[Any, ...]]] = []
    excluded: set[str] = set()
    for pkey, rec in records:
        miss = [n for n, v in zip(names, rec, strict=True) if _is_missing(v)]
        for n in miss:
            missing_by_var[n] += 1
        if miss:
            excluded.add(pkey)
        else:
            complete.append((pkey, rec))
    return complete, excluded, missing_by_var


def _key_records(
    rows: list[tuple[Any, ...]], id_pos: int, var_pos: list[int], key: bytes
) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """Group rows by hashed patient id; raw ids never leave this function."""
    by_key: dict[str, list[tuple[Any, ...]]] = {}
    n_no_id = 0
    for row in rows:
        raw = row[id_pos]
        pid = "" if _is_missing(raw) else str(raw).strip()
        if not pid:
            n_no_id += 1
            continue
        by_key.setdefault(patient_key(key, pid), []).append(tuple(row[p] for p in var_pos))
    return by_key, n_no_id


# --- connection -------------------------------------------------------------------------------


def readonly_url(url: str) -> URL:
    """The SQLAlchemy URL to open, made read-only where the backend allows it.

    ``${ENV}`` references are expanded. A SQLite file URL becomes
    ``sqlite:///file:<path>?mode=ro&uri=true``; a missing SQLite file is refused.

    Raises:
        ConfigError: unparseable URL or unset environment variable.
        DatabaseUnavailable: the SQLite file does not exist.
    """
    try:
        u = sa.engine.make_url(expand_env(url))
    except sa.exc.ArgumentError:
        raise ConfigError(
            "clinical.url is not a valid SQLAlchemy URL",
            "write it as dialect[+driver]://user@host/database (e.g. sqlite:///clinic.db)",
        ) from None
    if u.get_backend_name() != "sqlite":
        return u
    db = u.database or ""
    if db in ("", ":memory:") or u.query.get("uri") == "true":
        return u  # in-memory or already a URI: opened as given
    path = Path(db).expanduser().resolve()
    if not path.is_file():
        raise DatabaseUnavailable(
            f"the clinical SQLite database {path} does not exist",
            "check clinical.url (sqlite:////absolute/path.db, or a path relative to the "
            "working directory)",
        )
    return u.set(
        database=f"file:{quote(str(path))}", query={**u.query, "mode": "ro", "uri": "true"}
    )


def _describe(u: URL) -> str:
    """The database for messages: host/file, never a password (SQLite shown as its path)."""
    if u.get_backend_name() == "sqlite" and u.query.get("mode") == "ro":
        return f"SQLite file {unquote((u.database or '').removeprefix('file:'))} (read-only)"
    return u.render_as_string(hide_password=True)


@contextmanager
def readonly_connection(url: str) -> Iterator[Connection]:
    """A connection inside a transaction that cannot write (SQLite mode=ro, PostgreSQL READ ONLY).

    Args:
        url: the clinical database URL (``${ENV}`` references allowed).

    Yields:
        An open connection; the transaction is rolled back on exit.

    Raises:
        ConfigError, DatabaseUnavailable: see ``readonly_url``; unreachable database.
    """
    u = readonly_url(url)
    try:
        engine = sa.create_engine(u, hide_parameters=True, poolclass=sa.pool.NullPool)
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError, ImportError) as err:
        raise ConfigError(
            f"cannot open clinical.url {_describe(u)}: unknown backend or driver "
            f"({type(err).__name__})",
            "use an installed SQLAlchemy dialect, e.g. postgresql:// or sqlite:///",
        ) from None
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as err:
            raise DatabaseUnavailable(
                f"cannot connect to the clinical database {_describe(u)}: {_safe_message(err)}",
                "check clinical.url, that the server is running and reachable, and the "
                "password's environment variable",
            ) from None
        with conn:
            trans = conn.begin()
            try:
                if u.get_backend_name() == "postgresql":
                    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                yield conn
            finally:
                trans.rollback()
    finally:
        engine.dispose()


def _run_query(cfg: ClinicalConfig) -> tuple[list[str], list[tuple[Any, ...]]]:
    with readonly_connection(cfg.url) as conn:
        where = _describe(conn.engine.url)
        try:
            result = conn.execute(sa.text(cfg.query))
            if not result.returns_rows:
                raise DataError(
                    f"clinical.query returns no rows on {where}; it must be a SELECT",
                    "write clinical.query as SELECT <id column>, <variables> FROM ...",
                )
            columns = [str(c) for c in result.keys()]
            rows = [tuple(r) for r in result.fetchall()]
        except sa.exc.DBAPIError as err:
            raise DataError(
                f"the clinical query failed on {where}: {_safe_message(err)}",
                "check clinical.query (table and column names) against the database; it runs "
                "read-only, so it cannot write",
            ) from None
    if len(set(columns)) != len(columns):
        raise DataError(
            f"the clinical query returns duplicate column names: {', '.join(columns)}",
            "give every selected column a distinct name (SELECT a.x AS x1, b.x AS x2 ...)",
        )
    logger.info("clinical query returned %d rows, columns: %s", len(rows), ", ".join(columns))
    return columns, rows


_QUOTED = re.compile(r"'[^']*'")
_DIGITS = re.compile(r"\d{4,}")


def _safe_message(err: sa.exc.DBAPIError) -> str:
    """The driver's first error line, with SQL literals and long numbers redacted.

    Drivers quote fragments of the statement and, for type errors, the offending value; the
    query text is not logged (it may name patients), so literals and digit runs are masked.
    """
    orig = err.orig if err.orig is not None else err
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else type(orig).__name__
    if first.lower().startswith("invalid input"):
        first = first.split(":", 1)[0] + ": <value redacted>"
    first = _DIGITS.sub("<n>", _QUOTED.sub("'<redacted>'", first))
    return f"{type(orig).__name__}: {first[:300]}"


# --- typing and encoding ------------------------------------------------------------------------


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _norm(v: Any) -> Any:
    """A hashable, comparable form (NaN/None/'' equal each other)."""
    return None if _is_missing(v) else v


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool | np.bool_):
        return float(v)
    if isinstance(v, Number):
        return float(v)  # int, float, Decimal, numpy scalars
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _encode(
    name: str, col: Sequence[Any], declared: VariableType | None
) -> tuple[np.ndarray, VariableType, tuple[str, ...] | None]:
    """Encode one column: returns (codes [n], type, level labels or None)."""
    nums = [_as_number(v) for v in col]
    numeric = all(x is not None for x in nums)
    distinct = {(x if numeric else _label(v)) for x, v in zip(nums, col, strict=True)}
    if len(distinct) < 2:
        raise DataError(
            f"clinical variable '{name}' has a single value across all {len(col)} usable "
            "records; a constant cannot be a cause or an effect",
            f"drop '{name}' from clinical.query",
        )
    vtype = declared
    if vtype is None:
        if len(distinct) == 2:
            vtype = VariableType.BINARY
        elif numeric:
            vtype = VariableType.CONTINUOUS
        else:
            raise DataError(
                f"clinical variable '{name}' holds non-numeric values (text or dates) with "
                f"{len(distinct)} distinct values, so its type cannot be inferred",
                f"declare it in clinical.variables ({name}: categorical) or drop it from "
                "clinical.query",
            )
    if vtype is VariableType.CONTINUOUS:
        if not numeric:
            raise DataError(
                f"clinical variable '{name}' is declared continuous but holds non-numeric values",
                f"declare {name}: categorical (or binary), or cast it to a number in the query",
            )
        return np.asarray(nums, dtype=np.float64), vtype, None
    if vtype is VariableType.BINARY:
        if len(distinct) != 2:
            raise DataError(
                f"clinical variable '{name}' is declared binary but has {len(distinct)} "
                "distinct values",
                f"declare {name}: categorical, or map it to two values in clinical.query",
            )
        if numeric:
            lo, hi = sorted(distinct)
            codes = np.asarray([0.0 if x == lo else 1.0 for x in nums])
            if all(isinstance(v, bool | np.bool_) for v in col):
                return codes, vtype, ("false", "true")
            return codes, vtype, (_fmt(lo), _fmt(hi))
        labels = _binary_order([_label(v) for v in col])
        return np.asarray([float(labels.index(_label(v))) for v in col]), vtype, labels
    # categorical
    if numeric:
        order = sorted(distinct)
        index = {x: i for i, x in enumerate(order)}
        return (
            np.asarray([float(index[x]) for x in nums]),
            vtype,
            tuple(_fmt(x) for x in order),
        )
    order = sorted(distinct)
    index = {s: i for i, s in enumerate(order)}
    return np.asarray([float(index[_label(v)]) for v in col]), vtype, tuple(order)


def _label(v: Any) -> str:
    """Text values compare trimmed and case-insensitively ("Yes" == "yes ")."""
    return str(v).strip().casefold()


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _binary_order(values: Sequence[str]) -> tuple[str, str]:
    """The two labels in code order: a known (negative, positive) pair, else sorted."""
    a, b = sorted(set(values))
    if _BINARY_WORDS.get(b) == a:
        return b, a
    return a, b
