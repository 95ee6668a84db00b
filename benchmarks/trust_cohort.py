"""The chest X-ray cohort through ``cmcl run``, with and without background knowledge.

The ``cxr`` synthetic cohort (``pipeline.synthetic.cohort.NAMED_COHORTS``): COVID-19 causes an
opacity (``covid -> z0``), age enlarges the heart shadow (``age -> z1``), the diaphragm's
position predicts FEV1 (``z2 -> fev1``), a nodule predicts ICU admission
(``z3 -> icu_admission``); ``sex`` has no effect and ``z4`` is a nuisance latent. It is written
as DICOM plus a clinical database and run through the whole pipeline twice: without knowledge,
and with ``knowledge: {causes: [covid, age], effects: [icu_admission]}``. Each run's edges are
compared with the truth after matching the latents (as ``cmcl demo`` does), with their
orientation, stability and direction agreement.

Example::

    python -m benchmarks.trust_cohort --patients 1000 --out benchmarks/results/trust_cohort
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import yaml

from benchmarks.child_run import cmcl_run
from flows.demo import DEMO_MODEL, compare_with_truth
from pipeline.synthetic.cohort import make_synthetic_cohort, realism_options

KEY = "3c" * 32
KNOWLEDGE = {"causes": ["covid", "age"], "effects": ["icu_admission"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--realism", default="clean", help="a cmcl_core.realism preset, e.g. all")
    p.add_argument("--latent-dim", type=int, default=5, help="the model's m (the truth has 5)")
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
    info = make_synthetic_cohort(
        args.work / "cohort",
        n_patients=args.patients,
        setting="cxr",
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
    roles = dict(KNOWLEDGE)
    if "site" in info.u_names:  # the scanner site is installed before any image is taken
        roles["causes"] = [*roles["causes"], "site"]
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
        records.append({"knowledge": name, "scores": res.scores, "rows": res.found_rows})
        lines += [
            f"### knowledge: {knowledge or 'none'}",
            "",
            f"SHD {res.scores['shd']:.0f} (undetermined as undirected "
            f"{res.scores['shd_cpdag']:.0f}), TPR {res.scores['tpr']:.2f}, wrong claims "
            f"{res.scores['wrong_claims']:.0f} of {res.scores['claims']:.0f}, latent MCC "
            f"{res.scores['mcc']:.2f}, {res.seconds:.0f} s",
            "",
            "| source | target | weight | orientation | stability | agreement | truth |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res.found_rows:
            st = (r["source"], r["target"])
            verdict = "yes" if st in true else "reversed" if st[::-1] in true else "no"
            lines.append(
                f"| {r['source']} | {r['target']} | {r['weight']:+.3f} | "
                f"{r['orientation']} | {r['stability']} | "
                f"{r['direction_agreement']} | {verdict} |"
            )
        lines.append("")
    given = sys.argv[1:] if argv is None else argv
    cmd = "python -m benchmarks.trust_cohort " + shlex.join(given)
    head = [
        f"# The chest X-ray cohort with and without knowledge ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `{cmd}`. True edges: "
        + ", ".join(f"{a} -> {b}" for a, b in info.true_edges)
        + f"; sex has no effect. Realism: {args.realism}; model latent_dim {args.latent_dim}, "
        f"align {args.align}, intensity {args.intensity}"
        + "".join(f", {item}" for item in args.model)
        + ".",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(head + lines))
    (args.out / "results.json").write_text(
        json.dumps(
            {"command": cmd, "realism": args.realism, "records": records}, indent=1, default=str
        )
    )
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
