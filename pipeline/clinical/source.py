"""The clinical source: one read-only SQL query, typed and pseudonymised into a numeric table.

``load_clinical`` runs ``clinical.query`` against ``clinical.url`` (any SQLAlchemy URL; a
password only through ``${ENV}``), then

1. hashes the ``clinical.id_column`` values into pseudonymous patient keys
   (:func:`pipeline.pseudonyms.patient_key`: HMAC-SHA256 with ``CMCL_PSEUDONYM_KEY``) and drops
   the raw ids at once, so they exist only in memory and only until hashed;
2. uses every other column of the result as a clinical variable ``u`` (a column you do not want
   is left out of the query); ``clinical.variables`` declares types, undeclared columns are
   inferred: exactly two distinct values -> binary, numeric -> continuous, anything else
   (free text, dates) is refused with a message naming the column;
3. excludes rows with a missing value (NULL, NaN or an empty string) in a used variable, and
   counts them;
4. refuses contradicting duplicate records of one patient (identical duplicates collapse).

The query runs read-only (:mod:`pipeline.clinical.connection`); neither the query text nor
any value is logged: only counts and column names. Values are typed and coded by
:mod:`pipeline.clinical.encode`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.clinical.connection import describe, readonly_connection, safe_message
from pipeline.clinical.encode import encode_column, is_missing, normalise
from pipeline.config import ClinicalConfig
from pipeline.errors import DataError
from pipeline.pseudonyms import patient_key

logger = logging.getLogger(__name__)


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
        codes, vtype, labels = encode_column(name, col, cfg.variables.get(name))
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
        if len({tuple(normalise(v) for v in r) for r in recs}) > 1:
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
        miss = [n for n, v in zip(names, rec, strict=True) if is_missing(v)]
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
        pid = "" if is_missing(raw) else str(raw).strip()
        if not pid:
            n_no_id += 1
            continue
        by_key.setdefault(patient_key(key, pid), []).append(tuple(row[p] for p in var_pos))
    return by_key, n_no_id


def _run_query(cfg: ClinicalConfig) -> tuple[list[str], list[tuple[Any, ...]]]:
    with readonly_connection(cfg.url) as conn:
        where = describe(conn.engine.url)
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
                f"the clinical query failed on {where}: {safe_message(err)}",
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
