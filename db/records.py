"""Plain records that other packages pass to the write helpers.

These are frozen dataclasses with no SQLAlchemy in them, so ``pipeline`` and ``flows`` can
build them without touching ORM objects (STYLE.md, principle 6). Keys are pseudonyms: hex
HMAC-SHA256 digests made by the ingest code (``image_key`` over SOPInstanceUID,
``patient_key`` over PatientID, ``file_key`` over the path relative to the source folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class RunStatus(StrEnum):
    """Life cycle of a row in ``cmcl_runs``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CRASHED = "crashed"  # was running, but its heartbeat stopped (see write.mark_stale_runs)


class VarKind(StrEnum):
    """Whether a node of the learned graph is a clinical variable u or a latent z."""

    CLINICAL = "clinical"
    LATENT = "latent"


class Direction(StrEnum):
    """The kind of an edge, as the paper reads it."""

    CAUSAL = "causal"  # u -> z: a clinical variable causes an image feature
    ANTI_CAUSAL = "anti_causal"  # z -> u: an image feature causes a clinical variable
    OTHER = "other"  # u -> u or z -> z


def edge_direction(source_kind: str, target_kind: str) -> Direction:
    """The direction label implied by the kinds of an edge's two ends.

    Args:
        source_kind: 'clinical' or 'latent'.
        target_kind: 'clinical' or 'latent'.

    Returns:
        CAUSAL for clinical -> latent, ANTI_CAUSAL for latent -> clinical, OTHER otherwise.
    """
    s, t = VarKind(source_kind), VarKind(target_kind)
    if s is VarKind.CLINICAL and t is VarKind.LATENT:
        return Direction.CAUSAL
    if s is VarKind.LATENT and t is VarKind.CLINICAL:
        return Direction.ANTI_CAUSAL
    return Direction.OTHER


@dataclass(frozen=True)
class ImageRow:
    """One accepted image instance for the catalog ``cmcl_images`` (no identifying values)."""

    image_key: str
    patient_key: str
    study_key: str | None
    series_key: str | None
    file_key: str
    content_sha256: str
    modality: str
    photometric: str | None = None
    rows: int | None = None
    columns: int | None = None
    n_slices: int = 1
    transfer_syntax: str | None = None
    cache_key: str | None = None


@dataclass(frozen=True)
class QuarantineRow:
    """One rejected file for ``cmcl_quarantine``; ``detail`` must name no patient."""

    file_key: str
    content_sha256: str | None
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class EdgeRow:
    """One directed edge cause -> effect of a run's learned graph.

    ``direction`` may be left out: it is derived from the two kinds, and a given value that
    contradicts them raises ValueError. ``orientation`` says how the direction was decided
    (``knowledge`` | ``data`` | ``undetermined``: an undetermined row is an estimate, not a
    claim); ``stability`` and ``direction_agreement`` are fractions of resampled fits (None
    without resampling).
    """

    source: str
    target: str
    weight: float
    source_kind: str
    target_kind: str
    direction: str | None = None
    orientation: str | None = None
    stability: float | None = None
    direction_agreement: float | None = None

    def __post_init__(self) -> None:
        implied = edge_direction(self.source_kind, self.target_kind)
        if self.direction is None:
            object.__setattr__(self, "direction", implied.value)
        elif Direction(self.direction) is not implied:
            raise ValueError(
                f"edge {self.source} -> {self.target}: direction {self.direction!r} contradicts "
                f"kinds {self.source_kind} -> {self.target_kind} (expected {implied.value!r})"
            )


@dataclass(frozen=True)
class LatentRow:
    """The posterior mean z (m floats, any sequence or 1-D array) of one image in a run."""

    image_key: str
    patient_key: str
    z: Sequence[float]


@dataclass(frozen=True)
class VariableRow:
    """A node of a run's graph. ``position`` is its index in the weighted adjacency (u..., z...)."""

    name: str
    kind: str
    var_type: str
    position: int


@dataclass(frozen=True)
class ArtifactRow:
    """A file a run produced (e.g. ``encoder.onnx``), with its hash for verification on load."""

    name: str
    relpath: str
    sha256: str
    size_bytes: int
    kind: str
