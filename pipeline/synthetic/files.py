"""The synthetic cohort's files besides the DICOM ones, and reading its truth back.

``clinical.db`` (SQLite table ``clinical_records``), ``config.yaml`` (a ready pipeline config)
and ``truth_latents.npz`` (the simulated ``u``/``z`` of every training image, keyed by UIDs);
:func:`true_latents` maps pipeline image keys back to the simulated ``z`` for scoring.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cmcl_core.simulate import REALISM_PRESETS, SITE_NAME, Realism, SimulatedData
from pipeline.pseudonyms import image_key, series_key
from pipeline.synthetic.plan import Plan, Roles


def true_latents(out_dir: Path, *, key: bytes, image_keys: Sequence[str]) -> np.ndarray:
    """The simulated ``z`` of each pipeline image, for scoring learned latents (MCC, matching).

    Args:
        out_dir: a cohort folder written by :func:`pipeline.synthetic.cohort.make_synthetic_cohort`.
        key: the pseudonym key the cohort was ingested with.
        image_keys: pipeline image keys (``JoinedCohort.image_keys``); an MR series may be
            named by any of its slices' image keys or by its series key.

    Returns:
        ``[n, m]`` float64; a row of NaN for a key that is not an image of this cohort.
    """
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


def write_truth_latents(path: Path, plan: Plan, roles: Roles, sim: SimulatedData) -> None:
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
        **({} if sim.pose is None else {"pose": sim.pose[idx]}),  # [images, 4] dx dy deg scale
    )


def write_clinical(
    path: Path,
    sim: SimulatedData,
    names: Sequence[str],
    pids: Sequence[str],
    roles: Roles,
    rng: np.random.Generator,
) -> dict[str, dict[str, int]]:
    """Write ``clinical_records`` (no row for orphan images; one NULL per ``missing`` patient);
    binary variables as text (first: negative/positive, others no/yes), categorical ones as
    ``<name>_a``, ``<name>_b``, ... (at most 26 levels, so the labels sort in code order).
    Returns the coding, label -> code per text column."""
    coding: dict[str, dict[str, int]] = {}
    words: dict[str, tuple[str, ...]] = {}
    for j, (name, vtype) in enumerate(zip(names, sim.u_types, strict=True)):
        if vtype == "binary":
            words[name] = ("negative", "positive") if j == 0 else ("no", "yes")
        elif vtype == "categorical":
            n_levels = int(sim.u[:, j].max()) + 1
            words[name] = tuple(f"{name}_{chr(ord('a') + k)}" for k in range(n_levels))
        else:
            continue
        coding[name] = {w: k for k, w in enumerate(words[name])}
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


def write_config(
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


def realism_truth(
    realism: Realism, sim: SimulatedData, site_coding: dict[str, int] | None
) -> dict[str, Any]:
    """truth.json's ``realism``: the options, the matching preset's name, and what they drew."""
    preset = next((k for k, v in REALISM_PRESETS.items() if v == realism), None)
    out: dict[str, Any] = {"preset": preset, **realism.kwargs()}
    out["confounded_latents"] = [sim.z_names[j] for j in sim.confounded]
    # the pose of each image: truth_latents.npz["pose"], [images, 4] = (dx, dy, degrees, scale)
    out["pose_in"] = "truth_latents.npz" if sim.pose is not None else None
    if site_coding is not None:
        caused = [sim.var_names[j] for j in np.flatnonzero(sim.B_true[sim.u.shape[1] - 1])]
        out["site"] = {
            "column": SITE_NAME,
            "coding": site_coding,
            "gain": list(sim.site_gain),
            "offset": list(sim.site_offset),
            "latent_shift": list(sim.site_shift),
            "causes": caused,
        }
    return out
