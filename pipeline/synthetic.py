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
Header values look like PHI but are plainly synthetic (``pipeline.synthetic_dicom``, which
writes the files); file names never contain a patient id; a seed reproduces every byte.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cmcl_core.simulate import GRAPH_SETTINGS, SimulatedData, simulate
from pipeline.errors import ConfigError
from pipeline.synthetic_dicom import (
    BROKEN_KINDS,
    BROKEN_WHY,
    MAX_STORED,
    WINDOW,
    DicomFile,
    UidSource,
    instance_header,
    mr_series,
    patient_header,
    write_files,
)

logger = logging.getLogger(__name__)

__all__ = ["MAX_STORED", "CohortInfo", "make_synthetic_cohort", "true_latents"]

GENERATOR = "pipeline.synthetic"
_OURS = ("dicom", "clinical.db", "truth.json", "truth_latents.npz", "config.yaml")
_BINARY_NAMES = ("covid", "smoker", "diabetes", "hypertension", "icu_admission", "copd")
_CONTINUOUS_NAMES = ("age", "crp", "spo2", "wbc", "bmi", "ldh", "d_dimer", "ferritin")
_FILES_PER_FOLDER = 250
_FOLLOW_UP_NOISE = 0.02  # pixel noise of a patient's second radiograph


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
class _Roles:
    """A random partition of the simulated patients (indices into the simulation)."""

    orphan_img: np.ndarray  # images, no clinical row
    orphan_rec: np.ndarray  # clinical row, no image
    missing: np.ndarray  # image and a row with one NULL
    mr: np.ndarray  # image written as an MR series, complete row
    joined: np.ndarray  # radiograph and a complete row
    repeats: np.ndarray  # subset of joined with a second (follow-up) radiograph


@dataclass
class _Plan:
    """Every file to write and, per training image, what it shows."""

    files: list[DicomFile] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # truth per training image
    broken: list[dict[str, str]] = field(default_factory=list)
    radiographs: int = 0
    monochrome1: int = 0
    other_size: int = 0
    mr_files: int = 0


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
    setting, d, m, n_edges = _graph(setting, d, m, n_edges)
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
    roles = _assign_roles(rng, n_patients, n_orphan, missing_values, mr_patients, repeat_fraction)
    pids = [f"SYN{x:08d}" for x in rng.choice(10**8, size=n_patients, replace=False)]
    uids = UidSource(seed)
    patients = [patient_header(rng, i, pids[i], uids) for i in range(n_patients)]
    plan = _plan_files(
        rng,
        sim,
        roles,
        patients,
        uids,
        monochrome1_fraction,
        other_size_fraction,
        n_broken,
        mr_slices,
    )
    write_files(out_dir / "dicom", plan.files, workers or min(2, os.cpu_count() or 1))
    coding = _write_clinical(out_dir / "clinical.db", sim, names, pids, roles, rng)
    config_path = _write_config(out_dir, names, sim.u_types, seed, image_size_dicom)
    expected = _expected(plan, roles, n_patients)
    node_names = names + sim.z_names
    edges = tuple((node_names[i], node_names[j]) for i, j in np.argwhere(sim.B_true))
    truth = {
        "generator": GENERATOR,
        "setting": setting,
        "seed": seed,
        "n_patients": n_patients,
        "image_size": image_size_dicom,
        "n_binary": n_binary,
        "d": d,
        "m": m,
        "n_edges": n_edges,
        "u_names": list(names),
        "u_types": list(sim.u_types),
        "z_names": list(sim.z_names),
        "node_order": list(node_names),
        "edges": [{"source": a, "target": b} for a, b in edges],
        "B_true": sim.B_true.tolist(),
        "z_cells": [list(c) for c in sim.z_cells],
        "binary_coding": coding,
        "pixel_encoding": {
            "bits_stored": 12,
            "max_stored": MAX_STORED,
            "window_center": WINDOW[0],
            "window_width": WINDOW[1],
            "other_size_factor": 2,
        },
        "broken_files": plan.broken,
        "monochrome1_files": sorted(
            f"dicom/{f.relpath}" for f in plan.files if f.photometric == "MONOCHROME1"
        ),
        "expected": expected,
    }
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    _write_truth_latents(out_dir / "truth_latents.npz", plan, roles, sim)
    logger.info(
        "synthetic cohort: %d files (%d broken), %d patients, graph %s, %d edges",
        len(plan.files),
        n_broken,
        n_patients,
        setting or f"d={d} m={m}",
        len(edges),
    )
    return CohortInfo(
        out_dir=out_dir,
        dicom_dir=out_dir / "dicom",
        clinical_db=out_dir / "clinical.db",
        config_path=config_path,
        truth_path=truth_path,
        u_names=names,
        u_types=tuple(sim.u_types),
        true_edges=edges,
        expected=expected,
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


# --- parts ---------------------------------------------------------------------------------


def _graph(
    setting: str | None, d: int | None, m: int | None, n_edges: int | None
) -> tuple[str | None, int, int, int]:
    """The effective (setting, d, m, n_edges): an explicit graph overrides the setting (which
    is then kept only when it names the same graph)."""
    if d is not None and m is not None and n_edges is not None:
        same = setting is not None and GRAPH_SETTINGS.get(setting) == (d, m, n_edges)
        return (setting if same else None), d, m, n_edges
    if setting is None or setting not in GRAPH_SETTINGS:
        raise ConfigError(
            f"unknown graph setting {setting!r}",
            f"use one of {', '.join(GRAPH_SETTINGS)} or give d, m and n_edges",
        )
    return (setting, *GRAPH_SETTINGS[setting])


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


def _assign_roles(
    rng: np.random.Generator,
    n_patients: int,
    n_orphan: int,
    missing_values: int,
    mr_patients: int,
    repeat_fraction: float,
) -> _Roles:
    order = rng.permutation(n_patients)
    cut = np.cumsum([n_orphan, n_orphan, missing_values, mr_patients])
    joined = order[cut[-1] :]
    return _Roles(
        orphan_img=order[: cut[0]],
        orphan_rec=order[cut[0] : cut[1]],
        missing=order[cut[1] : cut[2]],
        mr=order[cut[2] : cut[3]],
        joined=joined,
        repeats=joined[: int(round(repeat_fraction * len(joined)))],
    )


def _relpath(n: int) -> str:
    return f"batch_{n // _FILES_PER_FOLDER:03d}/img_{n:06d}.dcm"


def _plan_files(
    rng: np.random.Generator,
    sim: SimulatedData,
    roles: _Roles,
    patients: list[dict[str, Any]],
    uids: UidSource,
    monochrome1_fraction: float,
    other_size_fraction: float,
    n_broken: int,
    mr_slices: int,
) -> _Plan:
    """Radiographs (one per image-bearing patient, a second for repeats), broken files (extra
    files of joined patients) and MR series; file numbers shuffled so broken files mix in."""
    pixels = np.rint(sim.images[:, 0] * MAX_STORED).astype(np.uint16)  # [n, 1, H, W] -> [n, H, W]
    no_radiograph = set(roles.orphan_rec.tolist()) | set(roles.mr.tolist())
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
    plan = _Plan(radiographs=len(shots), monochrome1=int(mono1.sum()), other_size=int(bigger.sum()))
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
    for s, i in enumerate(sorted(roles.mr.tolist())):
        series = mr_series(rng, uids, s, patients[i], pixels[i], mr_slices)
        plan.files.extend(series)
        plan.mr_files += len(series)
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


def _expected(plan: _Plan, roles: _Roles, n_patients: int) -> dict[str, Any]:
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
        "mr_series": len(roles.mr),
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


def _write_truth_latents(path: Path, plan: _Plan, roles: _Roles, sim: SimulatedData) -> None:
    idx = np.asarray([r["patient"] for r in plan.rows])  # [images]
    joined = list(set(roles.joined.tolist()) | set(roles.mr.tolist()))
    np.savez_compressed(
        path,
        relpath=np.asarray([r["relpath"] for r in plan.rows]),
        sop_instance_uid=np.asarray([r["sop"] for r in plan.rows]),  # MR: slices, "|"-joined
        series_instance_uid=np.asarray([r["series"] for r in plan.rows]),
        sample=idx,  # row of the simulated data set (cmcl_core.simulate, same seed)
        follow_up=np.asarray([r["follow_up"] for r in plan.rows]),  # noisy second images
        joined=np.isin(idx, joined),
        u=sim.u[idx],  # [images, d]
        z=sim.z[idx],  # [images, m]
    )


def _write_clinical(
    path: Path,
    sim: SimulatedData,
    names: Sequence[str],
    pids: Sequence[str],
    roles: _Roles,
    rng: np.random.Generator,
) -> dict[str, dict[str, int]]:
    """Write ``clinical_records`` (no row for orphan images; one NULL per ``missing`` patient);
    binary variables as text (first: negative/positive, others no/yes). Returns the coding."""
    coding: dict[str, dict[str, int]] = {}
    words: dict[str, tuple[str, str]] = {}
    for j, (name, vtype) in enumerate(zip(names, sim.u_types, strict=True)):
        if vtype == "binary":
            words[name] = ("negative", "positive") if j == 0 else ("no", "yes")
            coding[name] = {words[name][0]: 0, words[name][1]: 1}
    no_row = set(roles.orphan_img.tolist())
    null_col = {int(i): int(rng.integers(len(names))) for i in roles.missing.tolist()}
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
