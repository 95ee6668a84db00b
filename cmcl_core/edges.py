"""What each learned edge claims: background knowledge, orientation status and stability.

A researcher reads every edge as a finding, so each edge says how far its direction can be
trusted:

* ``knowledge``: the direction is fixed by a role the user gave (a *cause* precedes imaging and
  has no incoming edge; an *effect* follows imaging and has no outgoing edge);
* ``data``: decided by the data under the model's assumptions (additive-noise models between
  two continuous variables, Hoyer et al. 2008), and the resampled fits agree;
* ``undetermined``: the model cannot decide. A binary or categorical variable against a
  continuous one fits both directions alike (a logistic ``z -> u`` is the exact posterior of a
  two-Gaussian mixture ``u -> z``), or the resampled fits disagree. The row keeps the
  estimated direction, but it is not a claim. An edge between two latents (``latent_edges``)
  is always undetermined: it says that two image features co-vary beyond the clinical
  variables, which a hidden common cause explains as well as either direction.

Stability (:class:`Stability`) comes from refitting on bootstrap resamples
(``cmcl_core.stability``): the fraction of resamples whose graph contains the adjacency, and
of those the fraction that agree on the direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cmcl_core.variables import VariableType

#: Direction agreement below which an edge is ``undetermined`` (resamples disagree).
MIN_DIRECTION_AGREEMENT = 0.8
#: An adjacency absent from the reference fit gets a row when this share of resamples has it.
MIN_RESAMPLE_SHARE = 0.5


class Role(StrEnum):
    """What the user knows of an observed variable's place in time."""

    CAUSE = "cause"  # precedes imaging: no incoming edge
    EFFECT = "effect"  # follows imaging: no outgoing edge


class Orientation(StrEnum):
    """How an edge's direction was decided."""

    KNOWLEDGE = "knowledge"
    DATA = "data"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True)
class Edge:
    """One row of the edge table (``cmcl_edges``): ``source -> target`` as estimated.

    ``weight`` is the reference fit's edge strength (0 for an adjacency found only in the
    resamples); ``stability`` and ``direction_agreement`` are None without resampling.
    """

    source: str
    target: str
    weight: float
    orientation: Orientation
    stability: float | None = None
    direction_agreement: float | None = None

    @property
    def is_claim(self) -> bool:
        """Whether the row claims a direction (not ``undetermined``)."""
        return self.orientation is not Orientation.UNDETERMINED


@dataclass(frozen=True)
class Stability:
    """Edge frequencies over B resampled fits of a graph over p nodes.

    Attributes:
        adjacency: ``[p, p]`` symmetric; the fraction of resamples with an edge between i, j.
        forward: ``[p, p]``; the fraction of resamples with the edge ``i -> j``.
        weight: ``[p, p]``; mean |weight| of ``i -> j`` over the resamples that have it.
        resamples: B.
        level: ``dag`` (the DAG and orientation re-solved on resampled latents) or ``full``
            (the whole model refitted).
    """

    adjacency: np.ndarray
    forward: np.ndarray
    weight: np.ndarray
    resamples: int
    level: str

    @classmethod
    def from_graphs(cls, graphs: np.ndarray, level: str) -> Stability:
        """Frequencies of B weighted graphs ``[B, p, p]`` (``W[b, i, j] != 0``: ``i -> j``)."""
        E = np.asarray(graphs) != 0  # [B, p, p]
        forward = E.mean(0)
        count = E.sum(0)
        total = np.where(E, np.abs(graphs), 0.0).sum(0)
        weight = np.divide(total, count, out=np.zeros_like(total, dtype=float), where=count > 0)
        return cls((E | E.transpose(0, 2, 1)).mean(0), forward, weight, len(E), level)

    def agreement(self, i: int, j: int) -> float:
        """Of the resamples with an edge between i and j, the fraction with ``i -> j``."""
        both = self.forward[i, j] + self.forward[j, i]
        return float(self.forward[i, j] / both) if both > 0 else 0.0


def knowledge_mask(d: int, m: int, roles: Mapping[int, str]) -> np.ndarray:
    """Allowed edges under the roles of the first d nodes (``[(d + m), (d + m)]`` bool).

    A cause gets no incoming edge, an effect no outgoing edge; the diagonal is always False.
    """
    allowed = ~np.eye(d + m, dtype=bool)
    for i, role in roles.items():
        if Role(role) is Role.CAUSE:
            allowed[:, i] = False
        else:
            allowed[i, :] = False
    return allowed


def orientation_of(
    i: int,
    j: int,
    types: Sequence[str],
    knowledge: np.ndarray,
    agreement: float | None,
) -> Orientation:
    """The status of the edge ``i -> j`` (see the module docstring).

    Args:
        i, j: source and target node.
        types: a ``VariableType`` name per node.
        knowledge: the :func:`knowledge_mask` (``knowledge[j, i]`` False: the reverse edge is
            ruled out by a role).
        agreement: direction agreement over resamples (None: no resampling).
    """
    if not knowledge[j, i]:
        return Orientation.KNOWLEDGE
    continuous = types[i] == types[j] == VariableType.CONTINUOUS
    if continuous and (agreement is None or agreement >= MIN_DIRECTION_AGREEMENT):
        return Orientation.DATA
    return Orientation.UNDETERMINED


def edge_table(
    W: np.ndarray,
    names: Sequence[str],
    types: Sequence[str],
    knowledge: np.ndarray,
    stability: Stability | None = None,
    n_clinical: int | None = None,
) -> list[Edge]:
    """Rows for every edge of ``W`` and, with resampling, every adjacency that at least
    :data:`MIN_RESAMPLE_SHARE` of the resamples have; strongest first.

    Args:
        W: ``[p, p]`` the reference fit's weighted adjacency.
        names: node names.
        types: node types.
        knowledge: :func:`knowledge_mask`.
        stability: frequencies over resampled fits, or None.
        n_clinical: the first ``n_clinical`` nodes are clinical variables and the others
            latents; an edge between two latents is ``undetermined`` (None: every node is
            clinical).
    """
    W = np.asarray(W)
    first_latent = len(names) if n_clinical is None else n_clinical
    pairs = {(int(i), int(j)) for i, j in zip(*np.nonzero(W), strict=True)}
    if stability is not None:
        for i, j in zip(
            *np.nonzero(np.triu(stability.adjacency >= MIN_RESAMPLE_SHARE)), strict=True
        ):
            if W[i, j] == 0 and W[j, i] == 0:  # only in the resamples: their majority direction
                pairs.add(
                    (int(i), int(j)) if stability.agreement(i, j) >= 0.5 else (int(j), int(i))
                )
    rows = []
    for i, j in pairs:
        agreement = stability.agreement(i, j) if stability is not None else None
        rows.append(
            Edge(
                source=str(names[i]),
                target=str(names[j]),
                weight=float(W[i, j]),
                orientation=Orientation.UNDETERMINED
                if min(i, j) >= first_latent
                else orientation_of(i, j, types, knowledge, agreement),
                stability=None if stability is None else float(stability.adjacency[i, j]),
                direction_agreement=agreement,
            )
        )
    return sorted(rows, key=lambda e: (-abs(e.weight), -(e.stability or 0.0), e.source, e.target))


class LatentRole(StrEnum):
    """What a latent stands for, read from the edge table and the decoder."""

    CLINICAL = "clinical"  # on an edge with a clinical variable
    NUISANCE = "nuisance"  # shapes the image, tied to no clinical variable
    UNUSED = "unused"  # (nearly) does not change the decoded image: not an image feature


#: A latent whose effect on the decoded image (``CMCL.image_effect_``: image change per
#: standard deviation of the latent) is below this share of the largest latent's is ``unused``;
#: the final graph leaves it out.
UNUSED_SCALE = 0.1


def latent_roles(
    edges: Sequence[Edge], latent_names: Sequence[str], effect: Sequence[float]
) -> dict[str, LatentRole]:
    """The role of every latent, so that a latent that matches nothing clinical is reported as
    a nuisance factor (patient position, anatomy no variable explains, scanner) and never
    hidden or read as a cause.

    Args:
        edges: the edge table (:func:`edge_table`); a row counts when it is in the reference fit
            without resampling, or at least :data:`MIN_RESAMPLE_SHARE` of the resamples have it.
        latent_names: ``z0 ... z{m-1}``.
        effect: how much each latent changes the decoded image per standard deviation
            (``CMCL.image_effect_``; a model file without it gives the posterior means' spread).

    Returns:
        ``{latent name: role}`` in latent order.
    """
    effect = np.asarray(effect, dtype=float)
    top = float(effect.max()) if effect.size else 0.0
    latent = set(latent_names)
    linked = {
        name
        for e in edges
        if (e.stability is None or e.stability >= MIN_RESAMPLE_SHARE)
        and not {e.source, e.target} <= latent  # a z - z edge ties no latent to the clinic
        for name in (e.source, e.target)
    }
    roles = {}
    for name, s in zip(latent_names, effect, strict=True):
        if name in linked:
            roles[name] = LatentRole.CLINICAL
        elif top <= 0 or s < UNUSED_SCALE * top:
            roles[name] = LatentRole.UNUSED
        else:
            roles[name] = LatentRole.NUISANCE
    return roles
