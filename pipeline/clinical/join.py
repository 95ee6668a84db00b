"""The image/clinical join: catalogued images x clinical records on the pseudonymous patient key.

Both sides carry ``patient_key = HMAC-SHA256(CMCL_PSEUDONYM_KEY, PatientID)``: ingest computes
it from the DICOM PatientID, :mod:`pipeline.clinical.source` from ``clinical.id_column``; no
raw id is needed here. Every image of a patient joins to that patient's one record (several
images per patient are several training samples sharing one ``u``). Nothing is joined
silently: images without a record, images whose record was excluded for missing values and
records without an image are all counted in ``JoinCounts`` and logged; when nothing joins at
all, a ``DataError`` names the likely causes.

The joined rows are sorted by ``image_key``, so the cohort (and a seeded training run) does not
depend on the order in which the catalog lists images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.clinical.source import ClinicalTable
from pipeline.errors import DataError

logger = logging.getLogger(__name__)


class CatalogImageLike(Protocol):
    """What the join needs of a catalogued image (``pipeline`` catalog rows satisfy it)."""

    @property
    def image_key(self) -> str: ...

    @property
    def patient_key(self) -> str: ...

    @property
    def cache_key(self) -> str: ...


@dataclass(frozen=True)
class JoinCounts:
    """Accounting of the join (counts only, no patient data)."""

    images_in: int  # catalogued images offered to the join
    images_without_record: int  # the patient has no clinical record
    images_record_excluded: int  # the patient's record was excluded (missing values)
    records_in: int  # usable clinical records offered to the join
    records_without_image: int  # usable records whose patient has no catalogued image
    records_excluded_missing: int  # records the clinical source excluded for missing values
    patients: int  # patients in the joined cohort
    images_joined: int  # rows of the joined cohort (training samples)


@dataclass(frozen=True)
class JoinedCohort:
    """The training cohort: one row per joined image.

    Attributes:
        image_keys: pseudonymous image keys, ``[n]`` (sorted).
        patient_keys: the patient key of each row, ``[n]``.
        cache_keys: the preprocessed-array cache key of each row (for
            ``pipeline.imaging.images.load_training_images``), ``[n]``.
        u: ``[n, d]`` float64 clinical values of each row's patient.
        u_types: the d variable types (``continuous | binary | categorical``).
        u_names: the d variable names (clinical column names).
        levels: level labels of binary/categorical variables (``levels[name][code]``).
        counts: the join's accounting.
    """

    image_keys: tuple[str, ...]
    patient_keys: tuple[str, ...]
    cache_keys: tuple[str, ...]
    u: np.ndarray
    u_types: tuple[str, ...]
    u_names: tuple[str, ...]
    levels: Mapping[str, tuple[str, ...]]
    counts: JoinCounts

    def __len__(self) -> int:
        return len(self.image_keys)

    def summary(self) -> dict[str, Any]:
        """PHI-free summary for logs and run metrics: counts, variable names/types, balance."""
        out: dict[str, Any] = dict(asdict(self.counts))
        out["variables"] = {n: t for n, t in zip(self.u_names, self.u_types, strict=True)}
        balance: dict[str, Any] = {}
        for j, (name, vtype) in enumerate(zip(self.u_names, self.u_types, strict=True)):
            col = self.u[:, j]  # [n]
            if vtype == "continuous":
                balance[name] = {"mean": float(col.mean()), "std": float(col.std())}
            else:
                labels = self.levels.get(name, ())
                codes, freq = np.unique(col.astype(np.int64), return_counts=True)
                balance[name] = {
                    (labels[c] if c < len(labels) else str(c)): int(f)
                    for c, f in zip(codes.tolist(), freq.tolist(), strict=True)
                }
        out["balance"] = balance
        return out


def join_cohort(images: Sequence[CatalogImageLike], clinical: ClinicalTable) -> JoinedCohort:
    """Join catalogued images to clinical records on ``patient_key``.

    Args:
        images: catalogued images (anything with ``image_key``, ``patient_key``, ``cache_key``).
        clinical: the records from :func:`pipeline.clinical.source.load_clinical`.

    Returns:
        The joined cohort with ``u [n, d]`` and the counts of everything left out.

    Raises:
        DataError: an image key occurs twice, nothing joins, or a variable is constant in the
            joined cohort.
    """
    row_of = {k: i for i, k in enumerate(clinical.patient_keys)}
    seen: set[str] = set()
    joined: list[tuple[str, str, str, int]] = []  # (image_key, patient_key, cache_key, row)
    no_record = record_excluded = 0
    for img in images:
        if img.image_key in seen:
            raise DataError(
                "the image catalog lists one image twice; the join needs unique image keys",
                "re-run ingest (it de-duplicates instances) before training",
            )
        seen.add(img.image_key)
        row = row_of.get(img.patient_key)
        if row is None:
            if img.patient_key in clinical.excluded_keys:
                record_excluded += 1
            else:
                no_record += 1
            continue
        joined.append((img.image_key, img.patient_key, img.cache_key, row))
    joined.sort(key=lambda t: t[0])
    patients = {pk for _, pk, _, _ in joined}
    counts = JoinCounts(
        images_in=len(seen),
        images_without_record=no_record,
        images_record_excluded=record_excluded,
        records_in=len(clinical),
        records_without_image=len(clinical) - len(patients),
        records_excluded_missing=clinical.counts.excluded_missing,
        patients=len(patients),
        images_joined=len(joined),
    )
    logger.info(
        "join: %d images joined (%d patients); %d images without a clinical record, %d whose "
        "record was excluded for missing values; %d records without an image",
        counts.images_joined,
        counts.patients,
        counts.images_without_record,
        counts.images_record_excluded,
        counts.records_without_image,
    )
    if joined and counts.images_without_record > counts.images_joined:
        logger.warning(
            "join: most images (%d of %d) have no clinical record; check that clinical.id_column "
            "holds the DICOM PatientID in the same format (e.g. leading zeros)",
            counts.images_without_record,
            counts.images_in,
        )
    if not joined:
        raise DataError(
            f"no image joins a clinical record ({counts.images_in} catalogued images, "
            f"{counts.records_in} usable clinical records)",
            "check that clinical.id_column holds the DICOM PatientID (same format, e.g. leading "
            "zeros), and that CMCL_PSEUDONYM_KEY is the key used at ingest (a different key "
            "gives different patient keys)",
        )
    rows = np.fromiter((r for _, _, _, r in joined), dtype=np.int64, count=len(joined))  # [n]
    u = clinical.values[rows]  # [n_records, d] -> [n, d]
    for j, name in enumerate(clinical.u_names):
        if np.unique(u[:, j]).size < 2:
            raise DataError(
                f"clinical variable '{name}' is constant over the {len(joined)} joined images",
                f"drop '{name}' from clinical.query, or add images of patients where it varies",
            )
    return JoinedCohort(
        image_keys=tuple(t[0] for t in joined),
        patient_keys=tuple(t[1] for t in joined),
        cache_keys=tuple(t[2] for t in joined),
        u=u,
        u_types=clinical.u_types,
        u_names=clinical.u_names,
        levels=clinical.levels,
        counts=counts,
    )
