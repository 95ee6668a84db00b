"""The vocabulary of variable types: how a variable enters the causal model (its link function)."""

from __future__ import annotations

from enum import StrEnum


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
