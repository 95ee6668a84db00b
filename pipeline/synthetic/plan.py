"""What the synthetic cohort contains: patients' roles, headers, and every file to write.

The plan is pure data (:class:`Plan`: :class:`~pipeline.synthetic.writer.DicomFile` specs and
one truth row per training image); :mod:`pipeline.synthetic.writer` turns it into files and
:mod:`pipeline.synthetic.cohort` into ``truth.json``. UIDs are new, under pydicom's UID root,
derived from the seed (:class:`UidSource`), so a seed reproduces every byte.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from cmcl_core.simulate import SimulatedData
from pipeline.synthetic.writer import MAX_STORED, SOP_CLASS, DicomFile

BROKEN_KINDS = ("truncated", "not_dicom", "unsupported_modality", "no_pixel_data")
BROKEN_WHY = {
    "truncated": "a valid CR file cut at 60% of its length, inside the pixel data",
    "not_dicom": "a text file with a .dcm name",
    "unsupported_modality": "a valid image with Modality OT (secondary capture)",
    "no_pixel_data": "a CR header without the Pixel Data element",
}
_FILES_PER_FOLDER = 250
_FOLLOW_UP_NOISE = 0.02  # pixel noise of a patient's second radiograph


class UidSource:
    """Seed-derived, reproducible UIDs (``generate_uid`` with an entropy source).

    The UIDs are new (never a real instance's) and unique per seed and role; the 2.25 UUID form
    cannot be used because ``generate_uid`` ignores the entropy sources for it.
    """

    def __init__(self, seed: int):
        self.seed = str(seed)

    def uid(self, *parts: object) -> str:
        """A UID determined by the seed and ``parts``."""
        entropy = "|".join(["cmcl-synthetic", self.seed, *map(str, parts)])
        return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[entropy])


def patient_header(
    rng: np.random.Generator, i: int, patient_id: str, uids: UidSource
) -> dict[str, Any]:
    """Synthetic patient and study identity of simulated patient ``i``."""
    born = f"{int(rng.integers(1940, 2001))}{int(rng.integers(1, 13)):02d}"
    studied = f"{int(rng.integers(2020, 2024))}{int(rng.integers(1, 13)):02d}"
    return {
        "PatientName": f"SYNTHETIC^PATIENT^{i + 1:04d}",
        "PatientID": patient_id,
        "PatientBirthDate": f"{born}{int(rng.integers(1, 29)):02d}",
        "PatientSex": str(rng.choice(["F", "M", "O"])),
        "StudyDate": f"{studied}{int(rng.integers(1, 29)):02d}",
        "AccessionNumber": f"SYNACC{int(rng.integers(10**7, 10**8))}",
        "StudyInstanceUID": uids.uid("study", i),
    }


def instance_header(uids: UidSource, tag: str, modality: str, new_study: bool) -> dict[str, Any]:
    """Modality, SOP class and fresh instance/series UIDs (and a study UID for a new study)."""
    header: dict[str, Any] = {
        "Modality": modality,
        "SOPClassUID": SOP_CLASS[modality],
        "SOPInstanceUID": uids.uid("sop", tag),
        "SeriesInstanceUID": uids.uid("series", tag),
    }
    if new_study:
        header["StudyInstanceUID"] = uids.uid("study", tag)
    return header


def mr_series(
    rng: np.random.Generator,
    uids: UidSource,
    s: int,
    patient: dict[str, Any],
    stored: np.ndarray,
    n_slices: int,
) -> list[DicomFile]:
    """An MR series of ``n_slices`` whose two central slices (n//2 - 1 and n//2) equal the image
    and whose other slices fade (x 0.8 per slice), so both the middle slice and the maximum
    intensity projection give back the image."""
    series_uid, frame_uid = uids.uid("mr-series", s), uids.uid("mr-frame", s)
    mid = n_slices // 2
    names = rng.permutation(n_slices)  # file names do not reveal the slice order
    out = []
    for k in range(n_slices):
        dist = 0 if k in (mid - 1, mid) else min(abs(k - mid), abs(k - mid + 1))
        arr = np.rint(stored * 0.8**dist).astype(np.uint16)  # [H, W]
        hdr = {**patient, **instance_header(uids, f"mr-{s}-{k}", "MR", new_study=False)}
        hdr.update(
            SeriesInstanceUID=series_uid,
            FrameOfReferenceUID=frame_uid,
            InstanceNumber=k + 1,
            ImagePositionPatient=[0.0, 0.0, 4.0 * k],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[1.0, 1.0],
            SliceThickness=4.0,
        )
        rel = f"mr_series_{s:03d}/slice_{int(names[k]):03d}.dcm"
        out.append(DicomFile(rel, "image", hdr, arr))
    return out


@dataclass(frozen=True)
class Roles:
    """A random partition of the simulated patients (indices into the simulation)."""

    orphan_img: np.ndarray  # images, no clinical row
    orphan_rec: np.ndarray  # clinical row, no image
    missing: np.ndarray  # image and a row with one NULL
    mr: np.ndarray  # image written as an MR series, complete row
    joined: np.ndarray  # radiograph and a complete row
    repeats: np.ndarray  # subset of joined with a second (follow-up) radiograph


@dataclass
class Plan:
    """Every file to write and, per training image, what it shows."""

    files: list[DicomFile] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # truth per training image
    broken: list[dict[str, str]] = field(default_factory=list)
    radiographs: int = 0
    monochrome1: int = 0
    other_size: int = 0
    mr_files: int = 0
    mr_series: int = 0


def assign_roles(
    rng: np.random.Generator,
    n_patients: int,
    n_orphan: int,
    missing_values: int,
    mr_patients: int,
    repeat_fraction: float,
) -> Roles:
    order = rng.permutation(n_patients)
    cut = np.cumsum([n_orphan, n_orphan, missing_values, mr_patients])
    joined = order[cut[-1] :]
    return Roles(
        orphan_img=order[: cut[0]],
        orphan_rec=order[cut[0] : cut[1]],
        missing=order[cut[1] : cut[2]],
        mr=order[cut[2] : cut[3]],
        joined=joined,
        repeats=joined[: int(round(repeat_fraction * len(joined)))],
    )


def _relpath(n: int) -> str:
    return f"batch_{n // _FILES_PER_FOLDER:03d}/img_{n:06d}.dcm"


def plan_files(
    rng: np.random.Generator,
    sim: SimulatedData,
    roles: Roles,
    patients: list[dict[str, Any]],
    uids: UidSource,
    monochrome1_fraction: float,
    other_size_fraction: float,
    n_broken: int,
    mr_slices: int,
    mr_only: bool = False,
) -> Plan:
    """Radiographs (one per image-bearing patient, a second for repeats), broken files (extra
    files of joined patients) and MR series; file numbers shuffled so broken files mix in.

    With ``mr_only`` every image-bearing patient (``roles.mr`` or not) gets an MR series and no
    radiograph; ``roles.repeats`` should then be empty.
    """
    pixels = np.rint(sim.images[:, 0] * MAX_STORED).astype(np.uint16)  # [n, 1, H, W] -> [n, H, W]
    orphan_rec = set(roles.orphan_rec.tolist())
    with_series = set(range(len(pixels))) - orphan_rec if mr_only else set(roles.mr.tolist())
    no_radiograph = orphan_rec | with_series
    shots: list[tuple[int, np.ndarray, bool]] = [  # (patient, stored pixels, follow-up)
        (i, pixels[i], False) for i in range(len(pixels)) if i not in no_radiograph
    ]
    for i in sorted(roles.repeats.tolist()):
        noisy = sim.images[i, 0] + _FOLLOW_UP_NOISE * rng.standard_normal(pixels.shape[1:])
        shots.append((i, np.rint(np.clip(noisy, 0, 1) * MAX_STORED).astype(np.uint16), True))
    numbers = rng.permutation(len(shots) + n_broken)
    mono1 = rng.random(len(shots)) < monochrome1_fraction
    bigger = rng.random(len(shots)) < other_size_fraction
    modality = rng.choice(["CR", "DX"], size=len(shots))
    plan = Plan(radiographs=len(shots), monochrome1=int(mono1.sum()), other_size=int(bigger.sum()))
    for k, (i, stored, follow_up) in enumerate(shots):
        tag = f"{'rep' if follow_up else 'img'}-{i}"
        hdr = {**patients[i], **instance_header(uids, tag, str(modality[k]), follow_up)}
        arr = np.repeat(np.repeat(stored, 2, 0), 2, 1) if bigger[k] else stored  # [2H, 2W]
        if mono1[k]:
            arr = (MAX_STORED - arr).astype(np.uint16)  # stored inverted: same display
        rel = _relpath(int(numbers[k]))
        plan.files.append(
            DicomFile(rel, "image", hdr, arr, "MONOCHROME1" if mono1[k] else "MONOCHROME2")
        )
        plan.rows.append(
            {
                "relpath": rel,
                "patient": i,
                "follow_up": follow_up,
                "sop": hdr["SOPInstanceUID"],
                "series": hdr["SeriesInstanceUID"],
            }
        )
    for b, i in enumerate(rng.choice(roles.joined, size=n_broken).tolist()):
        kind = BROKEN_KINDS[b % len(BROKEN_KINDS)]
        mod = "OT" if kind == "unsupported_modality" else "CR"
        hdr = {**patients[i], **instance_header(uids, f"broken-{b}", mod, new_study=True)}
        rel = _relpath(int(numbers[len(shots) + b]))
        plan.files.append(DicomFile(rel, kind, hdr, pixels[i]))
        plan.broken.append({"file": f"dicom/{rel}", "reason": kind, "why": BROKEN_WHY[kind]})
    for s, i in enumerate(sorted(with_series)):
        series = mr_series(rng, uids, s, patients[i], pixels[i], mr_slices)
        plan.files.extend(series)
        plan.mr_files += len(series)
        plan.mr_series += 1
        plan.rows.append(
            {
                "relpath": f"mr_series_{s:03d}",
                "patient": i,
                "follow_up": False,
                "sop": "|".join(f.header["SOPInstanceUID"] for f in series),
                "series": series[0].header["SeriesInstanceUID"],
            }
        )
    return plan


def expected_counts(plan: Plan, roles: Roles, n_patients: int) -> dict[str, Any]:
    """The counts ingest and the join must report: one training image per radiograph file and
    one per MR series (ARCHITECTURE.md: every file catalogued or quarantined)."""
    per_patient = Counter(r["patient"] for r in plan.rows)
    joined = set(roles.joined.tolist()) | set(roles.mr.tolist())
    n_broken = len(plan.broken)
    n_orphan, n_missing = len(roles.orphan_img), len(roles.missing)
    return {
        "files_total": len(plan.files),
        "files_catalogued": len(plan.files) - n_broken,
        "files_quarantined": n_broken,
        "quarantined_by_reason": dict(Counter(b["reason"] for b in plan.broken)),
        "radiograph_files": plan.radiographs,
        "monochrome1_files": plan.monochrome1,
        "other_size_files": plan.other_size,
        "mr_series": plan.mr_series,
        "mr_files": plan.mr_files,
        "clinical_rows": n_patients - n_orphan,
        "images_in": len(plan.rows),
        "images_without_record": sum(per_patient[i] for i in roles.orphan_img.tolist()),
        "images_record_excluded": sum(per_patient[i] for i in roles.missing.tolist()),
        "records_in": n_patients - n_orphan - n_missing,
        "records_without_image": len(roles.orphan_rec),
        "records_excluded_missing": n_missing,
        "patients": len(joined),
        "images_joined": sum(per_patient[i] for i in joined),
    }
