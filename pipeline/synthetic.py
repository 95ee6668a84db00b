"""A synthetic DICOM cohort with a known causal graph: the demo's data and the pipeline's test bed.

``make_synthetic_cohort(out_dir, ...)`` draws patients from ``cmcl_core.simulate`` (paper
Appendix E.1: a bipartite DAG between clinical variables ``u`` and latents ``z``, images from
``z``) and writes them as a messy hospital export would look::

    out_dir/
      dicom/batch_000/img_000017.dcm ...   chest-X-ray-like CR/DX files, 12-bit, some MONOCHROME1,
                                           some of another size, a few broken files mixed in
      dicom/mr_series_000/slice_003.dcm    optional 3D MR series (off by default)
      clinical.db                          SQLite, table clinical_records(mrn, covid, age, ...)
      config.yaml                          a ready pipeline config (absolute paths)
      truth.json                           the true graph, B_true, the setting, seed, every
                                           broken file and why, the expected counts
      truth_latents.npz                    per image file: u, z, UIDs (for scoring latents)

Pixel encoding: ``stored = round(x * 4095)`` (BitsStored 12) with a VOI window
(center 2048, width 4096) that maps [0, 4095] linearly onto [0, 1], so ingest recovers the
simulated image; a MONOCHROME1 file stores ``4095 - stored`` and preprocesses to the same array
as its MONOCHROME2 twin; a resized file is up-sampled 2x by pixel repetition.

The cohort is deliberately imperfect, and ``truth.json["expected"]`` says by how much: patients
whose images have no clinical row, rows without images, rows with a NULL, patients with a
second (follow-up) image, and ``n_broken`` files (truncated pixel data, a text file named
``.dcm``, an unsupported modality, a DICOM without pixel data) that ingest must quarantine.
Header values look like PHI but are plainly synthetic (``SYNTHETIC^PATIENT^0001``, PatientID
``SYN`` + 8 digits, "CMCL Synthetic Hospital"); file names never contain a patient id. UIDs come
from ``pydicom.uid.generate_uid`` with seed-derived entropy, so a seed reproduces every byte.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cmcl_core.simulate import GRAPH_SETTINGS, simulate
from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_STORED = 4095  # 12-bit
GENERATOR = "pipeline.synthetic"
_OURS = ("dicom", "clinical.db", "truth.json", "truth_latents.npz", "config.yaml")
_BINARY_NAMES = ("covid", "smoker", "diabetes", "hypertension", "icu_admission", "copd")
_CONTINUOUS_NAMES = (
    "age",
    "crp",
    "spo2",
    "wbc",
    "bmi",
    "ldh",
    "d_dimer",
    "ferritin",
    "lymphocytes",
    "temperature",
    "resp_rate",
    "heart_rate",
    "creatinine",
)
_BROKEN_KINDS = ("truncated", "not_dicom", "unsupported_modality", "no_pixel_data")
_BROKEN_WHY = {
    "truncated": "a valid CR file cut at 60% of its length, inside the pixel data",
    "not_dicom": "a text file with a .dcm name",
    "unsupported_modality": "a valid image with Modality OT (secondary capture)",
    "no_pixel_data": "a CR header without the Pixel Data element",
}
_FILES_PER_FOLDER = 250


@dataclass(frozen=True)
class CohortInfo:
    """Where the cohort was written and what it should yield.

    Attributes:
        out_dir: the cohort folder.
        dicom_dir: the DICOM folder (``dicom.source``).
        clinical_db: the SQLite clinical database.
        config_path: the ready pipeline config.
        truth_path: ``truth.json``.
        u_names: clinical variable names (columns of ``clinical_records``).
        u_types: their types (``binary`` / ``continuous``).
        true_edges: the true directed edges ``(cause, effect)`` with latents named ``z0..``.
        expected: the counts ingest and the join should report (``truth.json["expected"]``).
    """

    out_dir: Path
    dicom_dir: Path
    clinical_db: Path
    config_path: Path
    truth_path: Path
    u_names: tuple[str, ...]
    u_types: tuple[str, ...]
    true_edges: tuple[tuple[str, str], ...]
    expected: dict[str, Any]

    def describe(self) -> str:
        """A short human-readable summary (paths, true edges, expected counts) for the CLI."""
        e = self.expected
        broken = ", ".join(f"{k} {v}" for k, v in e["quarantined_by_reason"].items()) or "none"
        return "\n".join(
            [
                f"synthetic cohort in {self.out_dir}",
                f"  DICOM files: {e['files_total']} in {self.dicom_dir} "
                f"({e['files_quarantined']} broken: {broken}; "
                f"{e['monochrome1_files']} MONOCHROME1, {e['other_size_files']} of another size, "
                f"{e['mr_series']} MR series)",
                f"  clinical database: {self.clinical_db} ({e['clinical_rows']} rows)",
                f"  true edges: {', '.join(f'{a} -> {b}' for a, b in self.true_edges) or 'none'}",
                f"  expected join: {e['images_joined']} images of {e['patients']} patients; "
                f"{e['images_without_record']} images without a record, "
                f"{e['records_without_image']} records without an image, "
                f"{e['records_excluded_missing']} records with a missing value",
                f"  config: {self.config_path}   ground truth: {self.truth_path}",
            ]
        )


@dataclass(frozen=True)
class _File:
    """One file to write: header fields + stored pixels (or a broken variant)."""

    relpath: str
    kind: str  # "image" or a _BROKEN_KINDS entry
    header: dict[str, Any]
    pixels: np.ndarray | None  # [H, W] uint16, as stored
    photometric: str = "MONOCHROME2"


def make_synthetic_cohort(
    out_dir: Path,
    *,
    n_patients: int = 500,
    setting: str | None = "4/10",
    d: int | None = None,
    m: int | None = None,
    n_edges: int | None = None,
    image_size_dicom: int = 64,
    seed: int = 0,
    n_binary: int = 1,
    var_names: Sequence[str] | None = None,
    monochrome1_fraction: float = 0.1,
    other_size_fraction: float = 0.1,
    repeat_fraction: float = 0.05,
    n_broken: int = 3,
    orphans: bool = True,
    missing_values: int = 2,
    mr_patients: int = 0,
    mr_slices: int = 8,
    workers: int | None = None,
) -> CohortInfo:
    """Write a synthetic DICOM cohort, its clinical SQLite database, config and ground truth.

    Args:
        out_dir: folder to write (created; a folder this function wrote before is refreshed,
            any other non-empty folder is refused).
        n_patients: simulated patients (each one simulated sample of ``u``, ``z``, image).
        setting: a paper graph "edges/nodes" (``cmcl_core.simulate.GRAPH_SETTINGS``); ignored
            when ``d``, ``m`` and ``n_edges`` are all given.
        d: number of clinical variables (explicit graph).
        m: number of latents (explicit graph).
        n_edges: number of u-z edges (explicit graph).
        image_size_dicom: side of the stored images (the "other size" files are twice that).
        seed: reproduces every byte of the cohort.
        n_binary: how many clinical variables are binary (stored as text, e.g. positive/negative).
        var_names: explicit clinical column names (default: covid, smoker, ... for binary and
            age, crp, ... for continuous variables, then u<i>).
        monochrome1_fraction: fraction of radiographs stored inverted as MONOCHROME1.
        other_size_fraction: fraction of radiographs stored at twice the size.
        repeat_fraction: fraction of joinable patients with a second (follow-up) radiograph.
        n_broken: broken files added (cycling truncated, not_dicom, unsupported_modality,
            no_pixel_data); ingest must quarantine each.
        orphans: add patients whose image has no clinical row and rows without an image
            (``max(1, n_patients // 50)`` of each).
        missing_values: clinical rows (of patients with an image) with one NULL variable.
        mr_patients: patients whose image is written as an MR series instead of a radiograph.
        mr_slices: slices per MR series (the two central ones hold the image exactly).
        workers: processes writing files (default: up to 2 of the CPUs; 1: in this process).

    Returns:
        Paths and the expected counts.

    Raises:
        ConfigError: inconsistent arguments or an unusable ``out_dir``.
    """
    d, m, n_edges = _graph(setting, d, m, n_edges)
    n_orphan = max(1, n_patients // 50) if orphans else 0
    n_special = 2 * n_orphan + missing_values + mr_patients
    if n_patients < n_special + 4:
        raise ConfigError(
            f"n_patients={n_patients} is too small for {n_orphan} orphans of each kind, "
            f"{missing_values} missing values and {mr_patients} MR patients",
            f"use n_patients >= {n_special + 4}",
        )
    names = _variable_names(d, n_binary, var_names)
    out_dir = _prepare(Path(out_dir))
    dicom_dir = out_dir / "dicom"
    rng = np.random.default_rng(seed)
    sim = simulate(
        d,
        m,
        n_edges,
        n=n_patients,
        image_size=image_size_dicom,
        n_binary=n_binary,
        seed=seed,
        setting=setting,
    )
    sim_names = names + sim.z_names
    edges = tuple(
        (sim_names[i], sim_names[j]) for i, j in zip(*np.nonzero(sim.B_true), strict=True)
    )

    # Who is what: a random partition of the simulated patients.
    order = rng.permutation(n_patients)
    orphan_img = order[:n_orphan]
    orphan_rec = order[n_orphan : 2 * n_orphan]
    missing = order[2 * n_orphan : 2 * n_orphan + missing_values]
    mr = order[2 * n_orphan + missing_values : n_special]
    joined = order[n_special:]
    repeats = joined[: int(round(repeat_fraction * len(joined)))]

    pids = [f"SYN{x:08d}" for x in rng.choice(10**8, size=n_patients, replace=False)]
    ids = _Ids(seed)
    patients = [_patient_header(rng, i, pids[i], ids) for i in range(n_patients)]
    pixels = np.rint(sim.images[:, 0] * MAX_STORED).astype(np.uint16)  # [n, 1, H, W] -> [n, H, W]

    # Radiographs (one per image-bearing patient, a second for repeats), then broken files.
    radiographs: list[tuple[int, np.ndarray, str]] = []  # (patient, stored pixels, uid tag)
    for i in sorted(set(range(n_patients)) - set(orphan_rec.tolist()) - set(mr.tolist())):
        radiographs.append((i, pixels[i], f"img-{i}"))
    for i in sorted(repeats.tolist()):
        noisy = sim.images[i, 0] + 0.02 * rng.standard_normal(sim.images.shape[2:])  # [H, W]
        radiographs.append(
            (i, np.rint(np.clip(noisy, 0, 1) * MAX_STORED).astype(np.uint16), f"rep-{i}")
        )
    n_files = len(radiographs) + n_broken
    names_perm = rng.permutation(n_files)
    mono1 = rng.random(len(radiographs)) < monochrome1_fraction
    bigger = rng.random(len(radiographs)) < other_size_fraction
    modality = rng.choice(["CR", "DX"], size=len(radiographs))

    files: list[_File] = []
    truth_rows: list[dict[str, Any]] = []
    for k, (i, stored, tag) in enumerate(radiographs):
        rel = _relpath(int(names_perm[k]))
        hdr = {
            **patients[i],
            **_instance_header(ids, tag, str(modality[k]), follow_up=tag.startswith("rep")),
        }
        arr = np.repeat(np.repeat(stored, 2, 0), 2, 1) if bigger[k] else stored  # [2H, 2W]
        photometric = "MONOCHROME1" if mono1[k] else "MONOCHROME2"
        if mono1[k]:
            arr = (MAX_STORED - arr).astype(np.uint16)
        files.append(_File(rel, "image", hdr, arr, photometric))
        truth_rows.append(
            {
                "relpath": rel,
                "patient": i,
                "follow_up": tag.startswith("rep"),
                "sop": hdr["SOPInstanceUID"],
                "series": hdr["SeriesInstanceUID"],
            }
        )
    hosts = rng.choice(joined, size=n_broken)
    broken: list[dict[str, str]] = []
    for b in range(n_broken):
        kind = _BROKEN_KINDS[b % len(_BROKEN_KINDS)]
        rel = _relpath(int(names_perm[len(radiographs) + b]))
        i = int(hosts[b])
        mod = "OT" if kind == "unsupported_modality" else "CR"
        hdr = {**patients[i], **_instance_header(ids, f"broken-{b}", mod, follow_up=True)}
        files.append(_File(rel, kind, hdr, pixels[i]))
        broken.append({"file": f"dicom/{rel}", "reason": kind, "why": _BROKEN_WHY[kind]})
    mr_files = 0
    for s, i in enumerate(sorted(mr.tolist())):
        series = _mr_series(rng, ids, s, patients[i], pixels[i], mr_slices)
        files.extend(series)
        mr_files += len(series)
        truth_rows.append(
            {
                "relpath": f"mr_series_{s:03d}",
                "patient": i,
                "follow_up": False,
                "sop": "|".join(f.header["SOPInstanceUID"] for f in series),
                "series": series[0].header["SeriesInstanceUID"],
            }
        )

    _write_all(dicom_dir, files, workers if workers is not None else min(2, os.cpu_count() or 1))
    binary_coding = _write_clinical(
        out_dir / "clinical.db", sim, names, pids, orphan_img, missing, rng
    )

    per_patient = Counter(r["patient"] for r in truth_rows)
    joined_set = set(joined.tolist()) | set(mr.tolist())
    images = len(truth_rows)
    expected = {
        "files_total": len(files),
        "files_catalogued": len(files) - n_broken,
        "files_quarantined": n_broken,
        "quarantined_by_reason": dict(Counter(b["reason"] for b in broken)),
        "radiograph_files": len(radiographs),
        "monochrome1_files": int(mono1.sum()),
        "other_size_files": int(bigger.sum()),
        "mr_series": len(mr),
        "mr_files": mr_files,
        "clinical_rows": n_patients - n_orphan,
        # the join (ARCHITECTURE: one image per radiograph file, one per MR series)
        "images_in": images,
        "images_without_record": sum(per_patient[i] for i in orphan_img.tolist()),
        "images_record_excluded": sum(per_patient[i] for i in missing.tolist()),
        "records_in": n_patients - n_orphan - missing_values,
        "records_without_image": n_orphan,
        "records_excluded_missing": missing_values,
        "patients": len(joined_set),
        "images_joined": sum(per_patient[i] for i in joined_set),
    }
    config_path = _write_config(out_dir, names, sim.u_types, seed, image_size_dicom)
    truth = {
        "generator": GENERATOR,
        "setting": setting,
        "seed": seed,
        "n_patients": n_patients,
        "d": d,
        "m": m,
        "n_edges": n_edges,
        "u_names": list(names),
        "u_types": list(sim.u_types),
        "z_names": list(sim.z_names),
        "node_order": list(sim_names),
        "edges": [{"source": a, "target": b} for a, b in edges],
        "B_true": sim.B_true.tolist(),
        "z_cells": [list(c) for c in sim.z_cells],
        "binary_coding": binary_coding,
        "pixel_encoding": {
            "bits_stored": 12,
            "max_stored": MAX_STORED,
            "window_center": 2048,
            "window_width": 4096,
            "other_size_factor": 2,
        },
        "broken_files": broken,
        "monochrome1_files": sorted(
            f"dicom/{f.relpath}" for f in files if f.photometric == "MONOCHROME1"
        ),
        "expected": expected,
    }
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    idx = np.asarray([r["patient"] for r in truth_rows])
    np.savez_compressed(
        out_dir / "truth_latents.npz",
        relpath=np.asarray([r["relpath"] for r in truth_rows]),
        sop_instance_uid=np.asarray([r["sop"] for r in truth_rows]),  # MR: slices, "|"-joined
        series_instance_uid=np.asarray([r["series"] for r in truth_rows]),
        sample=idx,  # [images] row of the simulated data set (cmcl_core.simulate, same seed)
        follow_up=np.asarray([r["follow_up"] for r in truth_rows]),  # noisy second images
        joined=np.isin(idx, list(joined_set)),
        u=sim.u[idx],  # [images, d]
        z=sim.z[idx],  # [images, m]
    )
    logger.info(
        "synthetic cohort: %d files (%d broken), %d patients, graph %s, %d edges",
        len(files),
        n_broken,
        n_patients,
        setting or f"d={d} m={m}",
        len(edges),
    )
    return CohortInfo(
        out_dir,
        dicom_dir,
        out_dir / "clinical.db",
        config_path,
        truth_path,
        names,
        tuple(sim.u_types),
        edges,
        expected,
    )


def true_latents(out_dir: Path, *, key: bytes, image_keys: Sequence[str]) -> np.ndarray:
    """The simulated ``z`` of each pipeline image, for scoring learned latents (MCC, matching).

    Args:
        out_dir: a cohort folder written by :func:`make_synthetic_cohort`.
        key: the pseudonym key the cohort was ingested with.
        image_keys: pipeline image keys (``JoinedCohort.image_keys``); an MR series may be
            named by any of its slices' image keys or by its series key.

    Returns:
        ``[n, m]`` float64; a row of NaN for a key that is not an image of this cohort.
    """
    from pipeline.deid import image_key, series_key

    lat = np.load(Path(out_dir) / "truth_latents.npz")
    row_of: dict[str, int] = {}
    for r, (sops, series) in enumerate(
        zip(lat["sop_instance_uid"], lat["series_instance_uid"], strict=True)
    ):
        for sop in str(sops).split("|"):
            row_of[image_key(key, sop)] = r
        if str(lat["relpath"][r]).startswith("mr_series"):
            row_of[series_key(key, str(series))] = r
    z = lat["z"]  # [images, m]
    out = np.full((len(image_keys), z.shape[1]), np.nan)  # [n, m]
    for i, k in enumerate(image_keys):
        r = row_of.get(k)
        if r is not None:
            out[i] = z[r]
    return out


# --- parts --------------------------------------------------------------------------------------


def _graph(
    setting: str | None, d: int | None, m: int | None, n_edges: int | None
) -> tuple[int, int, int]:
    if d is not None and m is not None and n_edges is not None:
        return d, m, n_edges
    if setting is None or setting not in GRAPH_SETTINGS:
        raise ConfigError(
            f"unknown graph setting {setting!r}",
            f"use one of {', '.join(GRAPH_SETTINGS)} or give d, m and n_edges",
        )
    return GRAPH_SETTINGS[setting]


def _variable_names(d: int, n_binary: int, var_names: Sequence[str] | None) -> tuple[str, ...]:
    if var_names is not None:
        if len(var_names) != d or len(set(var_names)) != d or "mrn" in var_names:
            raise ConfigError(f"var_names must be {d} distinct names other than 'mrn'")
        return tuple(var_names)
    binary = [_BINARY_NAMES[i] if i < len(_BINARY_NAMES) else f"u{i}" for i in range(n_binary)]
    cont = [
        _CONTINUOUS_NAMES[i] if i < len(_CONTINUOUS_NAMES) else f"u{n_binary + i}"
        for i in range(d - n_binary)
    ]
    return tuple(binary + cont)


def _prepare(out_dir: Path) -> Path:
    """Create ``out_dir``; refresh our own earlier output; refuse someone else's folder."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder", "choose another path")
        truth = out_dir / "truth.json"
        ours = False
        if truth.is_file():
            try:
                ours = json.loads(truth.read_text()).get("generator") == GENERATOR
            except (json.JSONDecodeError, AttributeError):
                ours = False
        if any(out_dir.iterdir()) and not ours:
            raise ConfigError(
                f"{out_dir} is not empty and was not written by the synthetic generator",
                "choose an empty or new folder",
            )
        for name in _OURS:
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class _Ids:
    """Seed-derived, reproducible UIDs (``generate_uid`` with entropy sources).

    The UIDs are new (never a real instance's) and unique per seed and role; the 2.25 UUID form
    cannot be used because ``generate_uid`` ignores the entropy sources for it.
    """

    def __init__(self, seed: int):
        self.seed = str(seed)

    def uid(self, *parts: object) -> str:
        # pydicom's UID root + SHA-512 of the entropy: the same seed gives the same UIDs
        entropy = "|".join(["cmcl-synthetic", self.seed, *map(str, parts)])
        return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[entropy])


def _patient_header(rng: np.random.Generator, i: int, pid: str, ids: _Ids) -> dict[str, Any]:
    year = int(rng.integers(1940, 2001))
    return {
        "PatientName": f"SYNTHETIC^PATIENT^{i + 1:04d}",
        "PatientID": pid,
        "PatientBirthDate": f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "PatientSex": str(rng.choice(["F", "M", "O"])),
        "StudyDate": f"{int(rng.integers(2020, 2024))}{int(rng.integers(1, 13)):02d}"
        f"{int(rng.integers(1, 29)):02d}",
        "AccessionNumber": f"SYNACC{int(rng.integers(10**7, 10**8))}",
        "StudyInstanceUID": ids.uid("study", i),
    }


def _instance_header(ids: _Ids, tag: str, modality: str, follow_up: bool) -> dict[str, Any]:
    header: dict[str, Any] = {
        "Modality": modality,
        "SOPClassUID": {
            "CR": ComputedRadiographyImageStorage,
            "DX": DigitalXRayImageStorageForPresentation,
            "OT": SecondaryCaptureImageStorage,
            "MR": MRImageStorage,
        }[modality],
        "SOPInstanceUID": ids.uid("sop", tag),
        "SeriesInstanceUID": ids.uid("series", tag),
    }
    if follow_up:
        header["StudyInstanceUID"] = ids.uid("study", tag)
    return header


def _relpath(n: int) -> str:
    return f"batch_{n // _FILES_PER_FOLDER:03d}/img_{n:06d}.dcm"


def _mr_series(
    rng: np.random.Generator,
    ids: _Ids,
    s: int,
    patient: dict[str, Any],
    stored: np.ndarray,
    n_slices: int,
) -> list[_File]:
    """An MR series whose two central slices (n//2 - 1, n//2) equal the image, others fade."""
    series_uid, frame_uid = ids.uid("mr-series", s), ids.uid("mr-frame", s)
    mid = n_slices // 2
    names = rng.permutation(n_slices)  # file names do not reveal the slice order
    out = []
    for k in range(n_slices):
        dist = 0 if k in (mid - 1, mid) else min(abs(k - mid), abs(k - mid + 1))
        arr = np.rint(stored * 0.8**dist).astype(np.uint16)  # [H, W]
        hdr = {**patient, **_instance_header(ids, f"mr-{s}-{k}", "MR", follow_up=False)}
        hdr.update(
            SeriesInstanceUID=series_uid,
            FrameOfReferenceUID=frame_uid,
            InstanceNumber=k + 1,
            ImagePositionPatient=[0.0, 0.0, 4.0 * k],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[1.0, 1.0],
            SliceThickness=4.0,
        )
        out.append(_File(f"mr_series_{s:03d}/slice_{int(names[k]):03d}.dcm", "image", hdr, arr))
    return out


# --- writing ------------------------------------------------------------------------------------


def _dataset(f: _File) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstitutionName = "CMCL Synthetic Hospital"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.Manufacturer = "CMCL synthetic generator"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    for k, v in f.header.items():
        setattr(ds, k, v)
    if ds.Modality in ("CR", "DX"):
        ds.ViewPosition = "PA"
    ds.WindowCenter = 2048  # with WindowWidth 4096: [0, 4095] -> [0, 1] linearly
    ds.WindowWidth = 4096
    ds.set_pixel_data(f.pixels, f.photometric, bits_stored=12, generate_instance_uid=False)
    if f.kind == "no_pixel_data":
        del ds.PixelData
    return ds


def _encode(f: _File) -> bytes:
    if f.kind == "not_dicom":
        return b"This is not a DICOM file: a deliberately broken file of a CMCL synthetic cohort.\n"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, _dataset(f), enforce_file_format=True)
    data = buf.getvalue()
    return data[: int(len(data) * 0.6)] if f.kind == "truncated" else data


def _write_chunk(dicom_dir: str, files: list[_File]) -> int:
    for f in files:
        path = Path(dicom_dir) / f.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encode(f))
    return len(files)


def _write_all(dicom_dir: Path, files: list[_File], workers: int) -> None:
    dicom_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(files) < 200:
        _write_chunk(str(dicom_dir), files)
        return
    chunks = [files[i :: workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        written = sum(pool.map(_write_chunk, [str(dicom_dir)] * len(chunks), chunks))
    if written != len(files):  # pragma: no cover - a worker failure raises before this
        raise RuntimeError(f"wrote {written} of {len(files)} synthetic files")


def _write_clinical(
    path: Path,
    sim: Any,
    names: Sequence[str],
    pids: Sequence[str],
    orphan_img: np.ndarray,
    missing: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, dict[str, int]]:
    """Write ``clinical_records`` (no row for ``orphan_img``; one NULL per ``missing``
    patient); binary variables as text. Returns the binary coding."""
    import sqlite3

    coding: dict[str, dict[str, int]] = {}
    words: dict[str, tuple[str, str]] = {}
    for j, (name, vtype) in enumerate(zip(names, sim.u_types, strict=True)):
        if vtype == "binary":
            words[name] = ("negative", "positive") if j == 0 else ("no", "yes")
            coding[name] = {words[name][0]: 0, words[name][1]: 1}
    no_row = set(orphan_img.tolist())
    null_col = {int(i): int(rng.integers(len(names))) for i in missing.tolist()}
    rows = []
    for i in range(len(pids)):
        if i in no_row:
            continue
        vals: list[Any] = []
        for j, name in enumerate(names):
            v = float(sim.u[i, j])
            vals.append(words[name][int(v)] if name in words else v)
        if i in null_col:
            vals[null_col[i]] = None
        rows.append((pids[i], *vals))
    cols = ", ".join(f"{n} {'TEXT' if n in words else 'REAL'}" for n in names)
    con = sqlite3.connect(path)
    try:
        con.execute(f"CREATE TABLE clinical_records (mrn TEXT PRIMARY KEY, {cols})")
        marks = ", ".join("?" * (len(names) + 1))
        con.executemany(f"INSERT INTO clinical_records VALUES ({marks})", rows)
        con.commit()
    finally:
        con.close()
    return coding


def _write_config(
    out_dir: Path, names: Sequence[str], types: Sequence[str], seed: int, image_size: int
) -> Path:
    cfg = {
        "dicom": {"source": str(out_dir / "dicom"), "image_size": image_size},
        "clinical": {
            "url": f"sqlite:///{out_dir / 'clinical.db'}",
            "query": f"SELECT mrn, {', '.join(names)} FROM clinical_records",
            "id_column": "mrn",
            "variables": dict(zip(names, types, strict=True)),
        },
        "results": {
            "url": f"sqlite:///{out_dir / 'results.db'}",
            "report_dir": str(out_dir / "reports"),
        },
        "seed": seed,
    }
    path = out_dir / "config.yaml"
    path.write_text(
        "# Written by pipeline.synthetic: a synthetic cohort with a known graph.\n"
        + yaml.safe_dump(cfg, sort_keys=False)
    )
    return path
