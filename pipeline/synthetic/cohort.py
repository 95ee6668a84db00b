"""A synthetic DICOM cohort with a known causal graph: the demo's data and the pipeline's test bed.

``make_synthetic_cohort(out_dir, ...)`` draws patients from ``cmcl_core.simulate`` (paper
Appendix E.1: a bipartite DAG between clinical variables ``u`` and latents ``z``, images from
``z``) and writes them as a messy hospital export would look::

    out_dir/
      dicom/batch_000/img_000017.dcm ...   chest-X-ray-like CR/DX files, 12-bit, some MONOCHROME1,
                                           some of another size, a few broken files mixed in
      dicom/mr_series_000/slice_003.dcm    optional 3D MR series (off by default; every
                                           image in the brain cohort)
      clinical.db                          SQLite, table clinical_records(mrn, covid, age, ...;
                                           site with scanner sites)
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
What the cohort holds is planned in :mod:`pipeline.synthetic.plan`, written by
:mod:`pipeline.synthetic.writer` (DICOM) and :mod:`pipeline.synthetic.files` (the rest). Header
values look like PHI but are plainly synthetic; file names never contain a patient id; a seed
reproduces every byte.

``realism`` (:class:`cmcl_core.simulate.Realism`; named presets in
:data:`cmcl_core.simulate.REALISM_PRESETS`) makes the images look more like a hospital's: pose
jitter, overlapping latents, latents that share a hidden factor, scanner sites. With sites, the
clinical table gets a text column ``site`` (``site_a``, ``site_b``, ...) that config.yaml declares
categorical; truth.json records every option and what it drew (``truth["realism"]``).

Named cohorts (:data:`NAMED_COHORTS`, ``setting="cxr"`` or ``"brain"``) fix the graph, the
clinical column names and what each latent means (``truth["z_meanings"]``). ``brain`` draws
stylised axial brain slices (``truth["renderer"] == "brain"``) and writes every patient's image
as an MR series (``truth["image_modality"] == "MR"``); its broken files are still CR headers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcl_core.realism import validate_realism
from cmcl_core.simulate import (
    GRAPH_SETTINGS,
    REALISM_PRESETS,
    SITE_NAME,
    Realism,
    simulate,
)
from pipeline.errors import ConfigError
from pipeline.synthetic.files import (
    realism_truth,
    write_clinical,
    write_config,
    write_truth_latents,
)
from pipeline.synthetic.plan import (
    UidSource,
    assign_roles,
    expected_counts,
    patient_header,
    plan_files,
)
from pipeline.synthetic.writer import MAX_STORED, WINDOW, write_files

logger = logging.getLogger(__name__)

GENERATOR = "pipeline.synthetic"  # in truth.json: marks a folder this generator may refresh
_OURS = ("dicom", "clinical.db", "truth.json", "truth_latents.npz", "config.yaml")
_MAX_SITES = 26  # site labels site_a .. site_z sort in code order
_BINARY_NAMES = ("covid", "smoker", "diabetes", "hypertension", "icu_admission", "copd")


@dataclass(frozen=True)
class NamedCohort:
    """A cohort with a fixed, named graph (``setting=<name>``).

    Attributes:
        var_names: clinical columns, the binary ones first.
        n_binary: how many of them are binary.
        m: number of latents.
        edges: ``(u index, z index, causal)``: ``u -> z`` when causal, else ``z -> u``.
        latents: what each latent stands for (recorded in truth.json).
        renderer: how latents become images (``cmcl_core.simulate.RENDERERS``).
        mr_only: every patient's image is an MR series (no radiographs, no follow-ups).
    """

    var_names: tuple[str, ...]
    n_binary: int
    m: int
    edges: tuple[tuple[int, int, bool], ...]
    latents: tuple[str, ...]
    renderer: str = "cells"
    mr_only: bool = False


#: ``cxr``: a chest X-ray cohort whose questions are the field's: COVID-19 causes an opacity,
#: age enlarges the heart shadow, the diaphragm's position predicts FEV1, a nodule predicts ICU
#: admission; sex has no effect and z4 is a nuisance latent (on no edge).
#: ``brain``: a glioma MRI cohort, one axial MR series per patient drawn by the brain renderer
#: (:mod:`cmcl_core.render_brain`): an IDH mutation causes ring enhancement, age enlarges the
#: ventricles, tumour size lowers the Karnofsky performance score (``z2 -> kps``); oedema is a
#: nuisance latent. Enhancement, tumour size and oedema share one location.
NAMED_COHORTS: dict[str, NamedCohort] = {
    "cxr": NamedCohort(
        var_names=("covid", "icu_admission", "sex", "age", "fev1"),
        n_binary=3,
        m=5,
        edges=((0, 0, True), (1, 3, False), (3, 1, True), (4, 2, False)),
        latents=("opacity", "heart_size", "diaphragm", "nodule", "nuisance"),
    ),
    "brain": NamedCohort(
        var_names=("idh_mutation", "age", "kps"),
        n_binary=1,
        m=4,
        edges=((0, 0, True), (1, 1, True), (2, 2, False)),
        latents=("enhancement", "ventricle_size", "tumour_size", "oedema"),
        renderer="brain",
        mr_only=True,
    ),
}
_CONTINUOUS_NAMES = ("age", "crp", "spo2", "wbc", "bmi", "ldh", "d_dimer", "ferritin")


@dataclass(frozen=True)
class CohortInfo:
    """Where the cohort was written and what it should yield.

    Attributes:
        out_dir: the cohort folder.
        dicom_dir: the DICOM folder (``dicom.source``).
        clinical_db: the SQLite clinical database.
        config_path: the ready pipeline config.
        truth_path: ``truth.json``.
        u_names: clinical variable names (columns of ``clinical_records``; ``site`` last when
            there are scanner sites).
        u_types: their types (``binary`` / ``continuous``; ``categorical`` for ``site``).
        true_edges: the true directed edges ``(cause, effect)`` with latents named ``z0..``.
        expected: the counts ingest and the join should report (``truth.json["expected"]``).
        realism: the realism options the images were simulated with.
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
    realism: Realism = Realism()

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
                *(
                    [f"  realism: {_describe_realism(self.realism)}"]
                    if self.realism != Realism()
                    else []
                ),
                f"  config: {self.config_path}   ground truth: {self.truth_path}",
            ]
        )


def realism_options(preset: str = "clean", **overrides: float | int | None) -> Realism:
    """The realism of a preset (:data:`cmcl_core.simulate.REALISM_PRESETS`) with some options
    replaced: ``overrides`` are ``Realism`` fields, ``None`` meaning "the preset's value".

    Raises:
        ConfigError: an unknown preset or an invalid option value.
    """
    if preset not in REALISM_PRESETS:
        raise ConfigError(
            f"unknown realism preset {preset!r}", f"use one of {', '.join(REALISM_PRESETS)}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    realism = dataclasses.replace(REALISM_PRESETS[preset], **given)
    try:
        validate_realism(2, **realism.kwargs())
    except ValueError as err:
        problem = str(err).removeprefix("simulate: ")
        raise ConfigError(problem, "see cmcl synthetic --help") from None
    return realism


def _describe_realism(r: Realism) -> str:
    parts = [f"{k.replace('_', ' ')} {v:g}" for k, v in r.kwargs().items() if v and k != "n_sites"]
    if r.n_sites:
        parts.append(f"{r.n_sites} scanner sites (clinical column {SITE_NAME})")
    return ", ".join(parts)


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
    realism: Realism = Realism(),
) -> CohortInfo:
    """Write a synthetic DICOM cohort, its clinical SQLite database, config and ground truth.

    Args:
        out_dir: folder to write (created; a folder this function wrote before is refreshed,
            any other non-empty folder is refused).
        n_patients: simulated patients (each one simulated sample of ``u``, ``z``, image).
        setting: a paper graph "edges/nodes" (``cmcl_core.simulate.GRAPH_SETTINGS``; ignored
            when ``d``, ``m`` and ``n_edges`` are all given) or a named cohort of
            :data:`NAMED_COHORTS` (``cxr``, ``brain``: its graph, names, binary share,
            renderer and modality; ``brain`` writes every image as an MR series, so
            ``mr_patients``, ``repeat_fraction`` and the radiograph fractions do not apply).
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
        realism: pose jitter, latent overlap, latent correlation and scanner sites of the
            images (default: none, the paper's images); ``n_sites`` at most 26.

    Returns:
        Paths and the expected counts.

    Raises:
        ConfigError: inconsistent arguments or an unusable ``out_dir``.
    """
    named = NAMED_COHORTS.get(setting or "")
    mr_only = named is not None and named.mr_only
    if named is not None:
        d, m, n_edges = len(named.var_names), named.m, len(named.edges)
        n_binary, var_names = named.n_binary, var_names or named.var_names
        _check_renderer(named, realism)
        if mr_only and mr_patients:
            raise ConfigError(
                f"the {setting} cohort writes every patient's image as an MR series, so "
                f"mr_patients={mr_patients} does not apply",
                "leave out --mr-patients for this cohort",
            )
        if mr_only:  # every image is an MR series: no MR subset, no follow-up radiographs
            repeat_fraction = 0.0
    else:
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
    if realism.n_sites:
        if SITE_NAME in names:
            raise ConfigError(
                f"a clinical variable is named {SITE_NAME!r}, the scanner sites' column",
                "rename it in var_names or use no sites",
            )
        if realism.n_sites > _MAX_SITES:
            raise ConfigError(
                f"n_sites={realism.n_sites} sites", f"use at most {_MAX_SITES} scanner sites"
            )
        names = (*names, SITE_NAME)
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
        edges=None if named is None else named.edges,
        renderer="cells" if named is None else named.renderer,
        **realism.kwargs(),
    )
    roles = assign_roles(rng, n_patients, n_orphan, missing_values, mr_patients, repeat_fraction)
    pids = [f"SYN{x:08d}" for x in rng.choice(10**8, size=n_patients, replace=False)]
    uids = UidSource(seed)
    patients = [patient_header(rng, i, pids[i], uids) for i in range(n_patients)]
    plan = plan_files(
        rng,
        sim,
        roles,
        patients,
        uids,
        monochrome1_fraction,
        other_size_fraction,
        n_broken,
        mr_slices,
        mr_only=mr_only,
    )
    write_files(out_dir / "dicom", plan.files, workers or min(2, os.cpu_count() or 1))
    coding = write_clinical(out_dir / "clinical.db", sim, names, pids, roles, rng)
    config_path = write_config(out_dir, names, sim.u_types, seed, image_size_dicom)
    expected = expected_counts(plan, roles, n_patients)
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
        "z_meanings": list(named.latents) if named is not None else None,
        "renderer": "cells" if named is None else named.renderer,
        "image_modality": "MR" if mr_only else ("CR/DX and MR" if mr_patients else "CR/DX"),
        "node_order": list(node_names),
        "edges": [{"source": a, "target": b} for a, b in edges],
        "B_true": sim.B_true.tolist(),
        "z_cells": [list(c) for c in sim.z_cells],
        "binary_coding": {k: v for k, v in coding.items() if k != SITE_NAME},
        "realism": realism_truth(realism, sim, coding.get(SITE_NAME)),
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
    write_truth_latents(out_dir / "truth_latents.npz", plan, roles, sim)
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
        realism=realism,
    )


def _check_renderer(named: NamedCohort, realism: Realism) -> None:
    """A named cohort's renderer must accept the realism options."""
    if named.renderer == "brain" and realism.overlap > 0:
        raise ConfigError(
            "overlap spreads latents over neighbouring cells; the brain cohort's tumour "
            "latents already share one location",
            "use overlap 0 (e.g. --realism pose or site, or --overlap 0)",
        )


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
