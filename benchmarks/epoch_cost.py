"""Cost of one CMCL training epoch relative to one plain-VAE epoch (target: <= 1.5x).

Both train on the same simulated images with the same conv encoder/decoder
(``cmcl_core.nets``), batch size, optimiser and thread count. The CMCL time is the mean
``seconds`` of its ``history_`` records after the DAG warm-up (so the joint DAG loss and the CR
regulariser are both active) with no validation split; the VAE time is the mean of the same
number of epochs. Usage::

    python -m benchmarks.epoch_cost --setting 4/10 --n 1000 --image-size 32 --epochs 3

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


def vae_epoch_seconds(images: np.ndarray, latent: int, batch_size: int, epochs: int) -> float:
    """Mean wall time of one plain-VAE epoch (Eq. 5-6 only) over ``epochs`` epochs."""
    _, c, h, w = images.shape
    enc, dec = ConvEncoder(c, (h, w), latent), ConvDecoder(latent, c, (h, w))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(images))
        for b in range(len(order) // batch_size):
            idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
            x = torch.as_tensor(images[idx])
            mu, lv = enc(x)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            rec, kl = losses.negative_elbo(dec(z), x, mu, lv)
            opt.zero_grad(set_to_none=True)
            (rec + kl).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def main() -> None:
    """Run the comparison and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="4/10")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per model")
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
    model.fit(data.images, data.u, u_types=list(data.u_types), u_names=list(data.u_names))
    cfg = model.config_
    cmcl_s = float(np.mean([r["seconds"] for r in model.history_[warmup:]]))
    cr_active = any("cr" in r for r in model.history_[warmup:])
    vae_s = vae_epoch_seconds(data.images, model.embed_dim_, cfg.batch_size, args.epochs)
    result = {
        "setting": args.setting,
        "n": args.n,
        "image_size": args.image_size,
        "threads": args.threads,
        "batch_size": cfg.batch_size,
        "cmcl_epoch_s": round(cmcl_s, 3),
        "vae_epoch_s": round(vae_s, 3),
        "ratio": round(cmcl_s / vae_s, 3),
        "cr_active": cr_active,
        "target": 1.5,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
