"""A named synthetic cohort through ``cmcl run``, with and without background knowledge.

``--setting`` picks a cohort of ``pipeline.synthetic.cohort.NAMED_COHORTS``:

* ``cxr`` (default): COVID-19 causes an opacity (``covid -> z0``), age enlarges the heart
  shadow (``age -> z1``), the diaphragm's position predicts FEV1 (``z2 -> fev1``), a nodule
  predicts ICU admission (``z3 -> icu_admission``); ``sex`` has no effect and ``z4`` is a
  nuisance latent. Knowledge: ``causes: [covid, age], effects: [icu_admission]``.
* ``brain``: one axial MR series per patient (``cmcl_core.render_brain``); an IDH mutation
  causes ring enhancement (``idh_mutation -> z0``), age enlarges the ventricles
  (``age -> z1``), tumour size lowers the performance score (``z2 -> kps``); oedema (``z3``)
  is a nuisance latent, and enhancement, tumour size and oedema share one location.
  Knowledge: ``causes: [idh_mutation, age], effects: [kps]``.

The cohort is written as DICOM plus a clinical database and run through the whole pipeline
twice: without knowledge, and with it. Each run's edges are compared with the truth after
matching the latents (as ``cmcl demo`` does), with their orientation, stability and direction
agreement; the skeleton SHD counts adjacencies found but not true or true but not found,
direction ignored, over the pairs with a clinical variable, as the realism grid scores them
(``benchmarks.realism_grid``). A link between two latents (``latent_edges``) is counted
apart, with how many of the links join two latents that share the cohort's hidden factor
(``truth.json``'s ``realism.confounded_latents``): such a link states a real dependence.

Example::

    python -m benchmarks.trust_cohort --patients 1000 --out benchmarks/results/trust_cohort
    python -m benchmarks.trust_cohort --setting brain --patients 1000 \\
        --out benchmarks/results/trust_cohort_brain
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.child_run import cmcl_run
from flows.demo import DEMO_MODEL, UNMATCHED, compare_with_truth
from pipeline.synthetic.cohort import NAMED_COHORTS, make_synthetic_cohort, realism_options

KEY = "3c" * 32


@dataclass(frozen=True)
class Setting:
    """What the benchmark knows about one named cohort.

    Attributes:
        title: heading of results.md.
        knowledge: the ``knowledge:`` block of the second run.
        note: what else the truth says (a variable with no effect, a nuisance latent).
    """

    title: str
    knowledge: dict[str, list[str]]
    note: str


SETTINGS: dict[str, Setting] = {
    "cxr": Setting(
        "The chest X-ray cohort",
        {"causes": ["covid", "age"], "effects": ["icu_admission"]},
        "sex has no effect",
    ),
    "brain": Setting(
        "The brain MRI cohort (co-located tumour features)",
        {"causes": ["idh_mutation", "age"], "effects": ["kps"]},
        "z0 enhancement, z1 ventricle size, z2 tumour size, z3 oedema (nuisance); z0, z2 and "
        "z3 share the tumour's location",
    ),
}


def _is_latent(name: str, latents: set[str]) -> bool:
    return name in latents or name.startswith(UNMATCHED)


def skeleton_shd(
    true_edges: list[tuple[str, str]], rows: list[dict[str, Any]], latents: set[str]
) -> int:
    """Adjacencies in the truth but not found plus found but not in the truth (direction
    ignored) over the pairs with a clinical variable; ``rows`` are edge rows named as the
    truth's nodes, weight 0 meaning absent; ``latents`` the truth's latent names (a name
    ``unmatched:zJ`` is a latent too)."""
    true = {frozenset(e) for e in true_edges}
    found = {
        frozenset((r["source"], r["target"]))
        for r in rows
        if r["weight"] != 0
        and not (_is_latent(r["source"], latents) and _is_latent(r["target"], latents))
    }
    return len(true ^ found)


def latent_links(
    rows: list[dict[str, Any]], latents: set[str], confounded: set[str]
) -> tuple[int, int]:
    """How many found edges join two latents, and how many of those join two latents that
    share the hidden factor."""
    links = [
        (r["source"], r["target"])
        for r in rows
        if r["weight"] != 0
        and _is_latent(r["source"], latents)
        and _is_latent(r["target"], latents)
    ]
    return len(links), sum(a in confounded and b in confounded for a, b in links)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="cxr", choices=sorted(SETTINGS))
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--realism", default="clean", help="a cmcl_core.realism preset, e.g. all")
    p.add_argument(
        "--latent-dim", type=int, default=None, help="the model's m (default: the truth's m)"
    )
    p.add_argument("--align", default="none", help="model.align: none | similarity")
    p.add_argument(
        "--intensity",
        default="none",
        choices=["none", "image", "group"],
        help="model.intensity (group: per level of the site column)",
    )
    p.add_argument(
        "--model",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more model settings, values read as YAML (e.g. rotation=oblique latent_edges=true)",
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/cmcl-trust-cohort"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/trust_cohort"))
    args = p.parse_args(argv)
    setting = SETTINGS[args.setting]
    if args.latent_dim is None:
        args.latent_dim = NAMED_COHORTS[args.setting].m
    info = make_synthetic_cohort(
        args.work / "cohort",
        n_patients=args.patients,
        setting=args.setting,
        seed=args.seed,
        image_size_dicom=args.image_size,
        realism=realism_options(args.realism),
    )
    base = yaml.safe_load(info.config_path.read_text())
    base["model"] = dict(DEMO_MODEL, latent_dim=args.latent_dim, align=args.align)
    if args.intensity != "none":
        base["model"]["intensity"] = args.intensity
        if args.intensity == "group":
            base["model"]["intensity_group"] = "site"
    for item in args.model:
        key, _, value = item.partition("=")
        base["model"][key] = yaml.safe_load(value)
    roles = dict(setting.knowledge)
    if "site" in info.u_names:  # the scanner site is installed before any image is taken
        roles["causes"] = [*roles["causes"], "site"]
    truth = json.loads((info.out_dir / "truth.json").read_text())
    latents = set(truth["z_names"])
    confounded = set((truth.get("realism") or {}).get("confounded_latents", []))
    lines, records = [], []
    for name, knowledge in (("none", None), ("roles", roles)):
        work = args.work / name
        work.mkdir(parents=True, exist_ok=True)
        data = dict(
            base,
            knowledge=knowledge or {},
            results={
                "url": f"sqlite:///{work / 'results.db'}",
                "report_dir": str(work / "reports"),
            },
        )
        (work / "results.db").unlink(missing_ok=True)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        t0 = time.perf_counter()
        cmcl_run(config, KEY)
        res = compare_with_truth(
            info.out_dir, config, bytes.fromhex(KEY), time.perf_counter() - t0, False
        )
        true = set(res.true_edges)
        res.scores["shd_skeleton"] = float(skeleton_shd(res.true_edges, res.found_rows, latents))
        links, shared = latent_links(res.found_rows, latents, confounded)
        res.scores["latent_links"], res.scores["latent_links_confounded"] = links, shared
        records.append(
            {
                "knowledge": name,
                "scores": res.scores,
                "rows": res.found_rows,
                "latent_corr": res.latent_corr,
            }
        )
        lines += [
            f"### knowledge: {knowledge or 'none'}",
            "",
            f"skeleton SHD {res.scores['shd_skeleton']:.0f} (pairs with a clinical variable; "
            f"latent links {links}, {shared} of them between latents sharing the hidden "
            f"factor), "
            f"SHD {res.scores['shd']:.0f} (undetermined as undirected "
            f"{res.scores['shd_cpdag']:.0f}), TPR {res.scores['tpr']:.2f}, wrong claims "
            f"{res.scores['wrong_claims']:.0f} of {res.scores['claims']:.0f}, latent MCC "
            f"{res.scores['mcc']:.2f}, {res.seconds:.0f} s",
            "",
            "Latents, |Spearman| with the matched learned latent (the largest with another, "
            "named by its match): "
            + ", ".join(
                f"{k} {v['matched']:.2f} ({v['other']:.2f} {v['other_name']})"
                for k, v in res.latent_corr.items()
            )
            + ".",
            "",
            "| source | target | weight | orientation | stability | agreement | truth |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res.found_rows:
            st = (r["source"], r["target"])
            verdict = "yes" if st in true else "reversed" if st[::-1] in true else "no"
            if r["weight"] == 0:  # a row only the resamples have: no edge of the learned graph
                verdict += " (resamples only)"
            lines.append(
                f"| {r['source']} | {r['target']} | {r['weight']:+.3f} | "
                f"{r['orientation']} | {r['stability']} | "
                f"{r['direction_agreement']} | {verdict} |"
            )
        found = {(r["source"], r["target"]) for r in res.found_rows if r["weight"] != 0}
        listed = {(r["source"], r["target"]) for r in res.found_rows}
        for a, b in sorted(true - found - {(t, s) for s, t in found}):
            if (a, b) not in listed and (b, a) not in listed:
                lines.append(f"| {a} | {b} | | | | | missed |")
        lines.append("")
    given = sys.argv[1:] if argv is None else argv
    cmd = "python -m benchmarks.trust_cohort " + shlex.join(given)
    head = [
        f"# {setting.title} with and without knowledge ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{cmd}`. True edges: "
        + ", ".join(f"{a} -> {b}" for a, b in info.true_edges)
        + f"; {setting.note}. Realism: {args.realism}; model latent_dim {args.latent_dim}, "
        f"align {args.align}, intensity {args.intensity}"
        + "".join(f", {item}" for item in args.model)
        + ".",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(head + lines))
    (args.out / "results.json").write_text(
        json.dumps(
            {"command": cmd, "setting": args.setting, "realism": args.realism, "records": records},
            indent=1,
            default=str,
        )
    )
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
