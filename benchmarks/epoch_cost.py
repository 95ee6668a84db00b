"""Cost of one CMCL training epoch relative to one plain-VAE epoch (target: <= 1.5x).

Both train on the same simulated images with the same conv encoder/decoder
(``cmcl_core.nets``), batch size, optimiser and thread count. The two are interleaved: after
every CMCL epoch (its ``history_`` ``seconds``, which include the scheduled rotations) one VAE
epoch runs, so a burst of load on a shared machine hits both sides of the ratio alike. The
ratio is mean CMCL epoch / mean VAE epoch over the epochs after the DAG warm-up (the joint DAG
loss and the CR regulariser both active), with no validation split; the per-pair ratios'
spread is reported too. ``--epochs`` should be a multiple of ``rotate_every`` (5) so the
rotation cost is amortised as in a real fit. Usage::

    python -m benchmarks.epoch_cost --setting 4/10 --n 1000 --image-size 32 --epochs 10

Prints one JSON line (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cmcl_core import losses
from cmcl_core.estimator import CMCL
from cmcl_core.nets import ConvDecoder, ConvEncoder
from cmcl_core.simulate import simulate_setting


class PlainVAE:
    """The reference: a VAE (Eq. 5-6 only) with the CMCL embedding's encoder and decoder."""

    def __init__(self, images: np.ndarray, latent: int, batch_size: int, seed: int = 0):
        _, c, h, w = images.shape
        torch.manual_seed(seed)
        self.enc, self.dec = ConvEncoder(c, (h, w), latent), ConvDecoder(latent, c, (h, w))
        params = [*self.enc.parameters(), *self.dec.parameters()]
        self.opt = torch.optim.Adam(params, lr=1e-3)
        self.images, self.batch_size = images, batch_size
        self.rng = np.random.default_rng(seed)

    def epoch_seconds(self) -> float:
        """Train one epoch; its wall time."""
        t0 = time.perf_counter()
        order = self.rng.permutation(len(self.images))
        bs = self.batch_size
        for b in range(len(order) // bs):
            idx = np.sort(order[b * bs : (b + 1) * bs])
            x = torch.as_tensor(self.images[idx])
            mu, lv = self.enc(x)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            rec, kl = losses.negative_elbo(self.dec(z), x, mu, lv)
            self.opt.zero_grad(set_to_none=True)
            (rec + kl).backward()
            self.opt.step()
        return time.perf_counter() - t0


def main() -> None:
    """Run the comparison and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="4/10")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10, help="timed epochs per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = simulate_setting(args.setting, n=args.n, image_size=args.image_size, seed=0)
    m = data.z.shape[1]
    warmup = 1
    model = CMCL(
        latent_dim=m,
        seed=0,
        device="cpu",
        epochs=warmup + args.epochs,
        min_epochs=warmup + args.epochs,
        dag_warmup_epochs=warmup,
        val_fraction=0.0,
        refit_dag=False,
        num_threads=args.threads,
    )
    vae: list[PlainVAE] = []
    vae_s: list[float] = []

    def after_epoch(epoch: int, record: dict) -> None:
        if not vae:  # built on the first call, when the embedding width is known
            vae.append(PlainVAE(data.images, model.embed_dim_, model.config_.batch_size))
        vae_s.append(vae[0].epoch_seconds())

    model.fit(
        data.images,
        data.u,
        u_types=list(data.u_types),
        u_names=list(data.u_names),
        callback=after_epoch,
    )
    cfg = model.config_
    cmcl = np.array([r["seconds"] for r in model.history_[warmup:]])
    ref = np.array(vae_s[warmup:])
    cr_active = any("cr" in r for r in model.history_[warmup:])
    pair = cmcl / ref
    result = {
        "setting": args.setting,
        "n": args.n,
        "image_size": args.image_size,
        "threads": args.threads,
        "batch_size": cfg.batch_size,
        "epochs": len(cmcl),
        "cmcl_epoch_s": round(float(cmcl.mean()), 3),
        "vae_epoch_s": round(float(ref.mean()), 3),
        "ratio": round(float(cmcl.mean() / ref.mean()), 3),
        "pair_ratio_quartiles": [round(float(q), 3) for q in np.quantile(pair, [0.25, 0.5, 0.75])],
        "cr_active": cr_active,
        "target": 1.5,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
