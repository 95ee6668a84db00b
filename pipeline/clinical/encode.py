"""Typing and encoding of clinical values: what ``u`` the estimator gets from SQL values.

Binary coding (deterministic, stored in ``ClinicalTable.levels``): booleans False/True -> 0/1;
numbers in ascending order (0/1 -> 0/1, 1/2 -> 0/1); strings of a known pair
(no/yes, n/y, false/true, f/t, negative/positive, neg/pos, absent/present, off/on, 0/1, case and
surrounding spaces ignored) -> 0/1; any other pair of strings in sorted order. Categorical
variables become integer codes 0..K-1 in sorted level order (numbers numerically); the DAG
learner one-hot expands them. Text values are compared trimmed and case-insensitively, and their
level labels are kept in that case-folded form ("Yes" and "yes " are one level, "yes").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Number
from typing import Any

import numpy as np

from pipeline.config import VariableType
from pipeline.errors import DataError

_FALSE_WORDS = ("no", "n", "false", "f", "negative", "neg", "absent", "off", "0")
_TRUE_WORDS = ("yes", "y", "true", "t", "positive", "pos", "present", "on", "1")
_BINARY_WORDS = dict(zip(_FALSE_WORDS, _TRUE_WORDS, strict=True))  # negative word -> positive


def is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def normalise(v: Any) -> Any:
    """A hashable, comparable form (NaN/None/'' equal each other)."""
    return None if is_missing(v) else v


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


def encode_column(
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
