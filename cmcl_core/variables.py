"""The observed variables: their type vocabulary (which fixes the link function) and encoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class VariableType(StrEnum):
    """Type of a variable of the DAG, which fixes its link function (paper Section 3.2).

    ``continuous``: Gaussian (squared error); ``binary``: logistic (0/1 values);
    ``categorical``: softmax over integer codes ``0..K-1``.
    """

    CONTINUOUS = "continuous"
    BINARY = "binary"
    CATEGORICAL = "categorical"


#: The type names, in the order of :class:`VariableType`.
VARIABLE_TYPES: tuple[str, ...] = tuple(t.value for t in VariableType)


def check_var_types(var_types: Sequence[str], p: int | None = None) -> list[str]:
    """Validate a list of type names (one per column when ``p`` is given).

    Raises:
        ValueError: an unknown type, or not ``p`` entries.
    """
    var_types = [str(t) for t in var_types]
    bad = sorted({t for t in var_types if t not in VARIABLE_TYPES})
    if bad:
        raise ValueError(
            f"unknown variable types {bad}: each entry must be one of {VARIABLE_TYPES}"
        )
    if p is not None and len(var_types) != p:
        raise ValueError(
            f"{len(var_types)} variable types for {p} columns: give one type per column"
        )
    return var_types


@dataclass(frozen=True)
class UEncoding:
    """How the observed variables ``u`` [n, d] enter the model, fitted on the training data.

    Continuous columns are standardised (``(u - shift) / scale``), binary ones mapped to 0/1
    (``shift`` the low level, ``scale`` high - low), categorical ones to the index of their
    level in ``levels`` (the DAG's codes) or one-hot (the networks' features).

    Attributes:
        types: a :class:`VariableType` name per column.
        names: column names (unique, never ``z0 ..``).
        shift: [d] shift per column.
        scale: [d] scale per column.
        levels: column index -> sorted level values of each categorical column.
    """

    types: tuple[str, ...]
    names: tuple[str, ...]
    shift: np.ndarray
    scale: np.ndarray
    levels: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        u: np.ndarray,
        types: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        latent_dim: int = 0,
    ) -> UEncoding:
        """Validate ``u`` [n, d] and its metadata and fit the encoding.

        Args:
            u: raw values, finite.
            types: a type per column; binary when a column has two values, else continuous,
                when None.
            names: column names (``u0 ..`` when None).
            latent_dim: m; names must not clash with ``z0 .. z{m-1}``.

        Raises:
            ValueError: naming the column and the fix.
        """
        n, d = u.shape
        if types is None:
            types = [
                VariableType.BINARY if len(np.unique(u[:, i])) == 2 else VariableType.CONTINUOUS
                for i in range(d)
            ]
        types = check_var_types(types)
        if len(types) != d:
            raise ValueError(f"u_types has {len(types)} entries but u has {d} columns")
        names = [str(s) for s in names] if names is not None else [f"u{i}" for i in range(d)]
        if len(names) != d:
            raise ValueError(f"u_names has {len(names)} entries but u has {d} columns")
        if len(set(names)) != d:
            raise ValueError(f"u_names must be unique, got {names}")
        clash = sorted({f"z{j}" for j in range(latent_dim)} & set(names))
        if clash:
            raise ValueError(f"u_names {clash} clash with latent names z0..z{{m-1}}; rename them")
        shift, scale, levels = np.zeros(d), np.ones(d), {}
        for i, (t, name) in enumerate(zip(types, names, strict=True)):
            values = np.unique(u[:, i])
            if t == VariableType.BINARY:
                if len(values) != 2:
                    raise ValueError(
                        f"u variable {name!r} is declared binary but has {len(values)} distinct "
                        "values; declare it continuous or categorical, or recode it to 0/1"
                    )
                shift[i], scale[i] = values[0], values[1] - values[0]
            elif t == VariableType.CATEGORICAL:
                if len(values) < 2 or np.any(values != np.round(values)):
                    raise ValueError(
                        f"u variable {name!r} is declared categorical but has "
                        f"{len(values)} level(s) or non-integer codes; recode it to integers"
                    )
                levels[i] = values
            else:
                sd = u[:, i].std()
                if not sd > 0:
                    raise ValueError(f"continuous u variable {name!r} is constant; drop it")
                shift[i], scale[i] = u[:, i].mean(), sd
        return cls(tuple(types), tuple(names), shift, scale, levels)

    @property
    def d(self) -> int:
        """Number of variables."""
        return len(self.types)

    @property
    def n_levels(self) -> list[int]:
        """Level count per column (1 unless categorical), as ``NotearsMLP`` takes it."""
        return [len(self.levels.get(i, ())) or 1 for i in range(self.d)]

    def low_high(self, i: int) -> tuple[float, float]:
        """The two raw values of binary column ``i``."""
        return float(self.shift[i]), float(self.shift[i] + self.scale[i])

    def to_dict(self) -> dict:
        """JSON-able form (``from_dict`` reads it back)."""
        return {
            "u_types": list(self.types),
            "u_names": list(self.names),
            "u_shift": self.shift.tolist(),
            "u_scale": self.scale.tolist(),
            "u_levels": {str(i): lv.tolist() for i, lv in self.levels.items()},
        }

    @classmethod
    def from_dict(cls, meta: dict) -> UEncoding:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(meta["u_types"]),
            tuple(meta["u_names"]),
            np.array(meta["u_shift"]),
            np.array(meta["u_scale"]),
            {int(i): np.array(lv) for i, lv in meta["u_levels"].items()},
        )
