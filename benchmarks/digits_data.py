"""Semi-synthetic rotated / shifted digits (paper Section 4.2 and Appendix E.3).

The paper takes 10 MNIST digits (one per class), draws a structured variable per sample and
transforms the digit image by a nonlinear function of it:

* rotation (Section 4.2, Figure 4): ``angle ~ Uniform(0, 10)``, the image is rotated by
  ``f(angle)`` degrees;
* vertical shift (Appendix E.3, Figure 6): ``v ~ Uniform(-5, 5)``, the image is shifted
  vertically by ``f(v)``; the structured variables are ``u = [v, digit]``.

MNIST downloads fail on these machines, so the digits come from scikit-learn's bundled 8x8
``load_digits`` (1797 images), bilinearly up-sampled to 20x20 and centred in a 28x28 canvas with a
4-pixel margin, as MNIST digits are. The paper leaves ``f`` open beyond "nonlinear" (and writes
the shift as ``Norm(v, 1) + Norm(0, 1)``); here, following Assumption 2 (``z = f(u) + eps``):

* rotation degrees ``z = 40 tanh((angle - 5) / 3) + eps``, ``eps ~ N(0, 2^2)`` (about -38 to 38);
* shift pixels (positive = down) ``z = 4 tanh(v / 3) + eps``, ``eps ~ N(0, 0.5^2)`` (about -4 to 4).

Each sample's digit class is uniform over the 10 base digits; it is returned as a categorical
``u`` (``u = [variable, digit]`` as in Appendix E.3). The true cross-modal edge is
``variable -> transform`` (``angle -> rotation`` / ``v -> shift``); the digit class also causes
the digit's identity in the image, which is not a single scalar latent and so has no scalar
ground-truth edge here. Transforms run batched through ``torch.nn.functional.grid_sample``.

Run ``python benchmarks/digits_data.py`` to print a summary of both data sets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DigitsData", "base_digits", "make_rotation_digits", "make_shift_digits"]

IMAGE_SIZE = 28
_DIGIT_SIZE = 20  # MNIST-like: a 20x20 digit in a 28x28 canvas


@dataclass(frozen=True, eq=False)
class DigitsData:
    """A semi-synthetic digits data set.

    Attributes:
        images: ``[n, 1, 28, 28]`` float32 in [0, 1].
        u: ``[n, 2]`` float64: the simulated variable and the digit class (0-9).
        u_types: ``("continuous", "categorical")``.
        u_names: ``("angle", "digit")`` or ``("v", "digit")``.
        transform: ``[n]`` the applied transform (degrees or pixels): the true latent ``z``.
        transform_name: ``"rotation"`` or ``"shift"``.
        true_edges: ``((variable, transform_name),)``: the scalar ground-truth edge.
        base_images: ``[10, 28, 28]`` the untransformed digit of each class.
        seed: Seed that reproduces the data.
    """

    images: np.ndarray
    u: np.ndarray
    u_types: tuple[str, ...]
    u_names: tuple[str, ...]
    transform: np.ndarray
    transform_name: str
    true_edges: tuple[tuple[str, str], ...]
    base_images: np.ndarray
    seed: int


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (values 0-16) and their classes, read once."""
    from sklearn.datasets import load_digits  # benchmark-only dependency (dev / bench extras)

    digits = load_digits()
    return digits.images, digits.target


def base_digits(seed: int = 0) -> np.ndarray:
    """One scikit-learn digit per class, up-sampled to a 20x20 digit in a 28x28 canvas.

    Args:
        seed: Chooses which instance of each class is used.

    Returns:
        ``[10, 28, 28]`` float32 in [0, 1]; row ``k`` is a digit ``k``.
    """
    images, target = _load_digits()
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(target == k)) for k in range(10)]
    small = torch.from_numpy(images[picks] / 16.0).float()[:, None]  # [10, 1, 8, 8]
    big = F.interpolate(
        small, size=(_DIGIT_SIZE, _DIGIT_SIZE), mode="bilinear", align_corners=False
    )
    margin = (IMAGE_SIZE - _DIGIT_SIZE) // 2
    canvas = F.pad(big, (margin,) * 4)  # [10, 1, 20, 20] -> [10, 1, 28, 28]
    return canvas[:, 0].clamp(0.0, 1.0).numpy()


def _warp(images: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Apply per-sample affine maps (output -> input, normalised coordinates), bilinear."""
    x = torch.from_numpy(images).float()[:, None]  # [n, 28, 28] -> [n, 1, 28, 28]
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0.0, 1.0).numpy()  # [n, 1, 28, 28]


def _sample_digits(rng: np.random.Generator, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 1:
        raise ValueError(f"n={n}: need at least one sample.")
    base = base_digits(seed)
    digit = rng.integers(0, 10, size=n)  # [n]
    return base, digit


def make_rotation_digits(n: int = 1000, seed: int = 0, noise_deg: float = 2.0) -> DigitsData:
    """Digits rotated by a nonlinear function of ``angle ~ Uniform(0, 10)`` (Section 4.2).

    Args:
        n: Number of samples.
        seed: Random seed (digit instances, classes, angles, noise).
        noise_deg: Standard deviation of the rotation noise ``eps`` in degrees.

    Returns:
        :class:`DigitsData` with ``u = [angle, digit]`` and ``transform`` the rotation in degrees
        (counter-clockwise as displayed, the sense of ``scipy.ndimage.rotate``).
    """
    rng = np.random.default_rng(seed)
    base, digit = _sample_digits(rng, n, seed)
    angle = rng.uniform(0.0, 10.0, size=n)  # [n]
    degrees = 40.0 * np.tanh((angle - 5.0) / 3.0) + noise_deg * rng.standard_normal(n)  # [n]
    rad = np.deg2rad(degrees)
    cos, sin = np.cos(rad), np.sin(rad)
    # grid_sample maps output to input coordinates: the inverse rotation (y axis points down)
    theta = np.stack(
        [np.stack([cos, -sin, 0 * cos], -1), np.stack([sin, cos, 0 * cos], -1)], axis=1
    )  # [n, 2, 3]
    return DigitsData(
        images=_warp(base[digit], theta).astype(np.float32),
        u=np.column_stack([angle, digit.astype(np.float64)]),
        u_types=("continuous", "categorical"),
        u_names=("angle", "digit"),
        transform=degrees,
        transform_name="rotation",
        true_edges=(("angle", "rotation"),),
        base_images=base,
        seed=seed,
    )


def make_shift_digits(n: int = 1000, seed: int = 0, noise_px: float = 0.5) -> DigitsData:
    """Digits shifted vertically by a nonlinear function of ``v ~ Uniform(-5, 5)`` (App. E.3).

    Args:
        n: Number of samples.
        seed: Random seed (digit instances, classes, v, noise).
        noise_px: Standard deviation of the shift noise ``eps`` in pixels.

    Returns:
        :class:`DigitsData` with ``u = [v, digit]`` and ``transform`` the downward shift in pixels.
    """
    rng = np.random.default_rng(seed)
    base, digit = _sample_digits(rng, n, seed)
    v = rng.uniform(-5.0, 5.0, size=n)  # [n]
    shift = 4.0 * np.tanh(v / 3.0) + noise_px * rng.standard_normal(n)  # [n] pixels, + = down
    theta = np.zeros((n, 2, 3))  # [n, 2, 3]
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 1, 2] = -2.0 * shift / IMAGE_SIZE  # output row y samples input row y - shift
    return DigitsData(
        images=_warp(base[digit], theta).astype(np.float32),
        u=np.column_stack([v, digit.astype(np.float64)]),
        u_types=("continuous", "categorical"),
        u_names=("v", "digit"),
        transform=shift,
        transform_name="shift",
        true_edges=(("v", "shift"),),
        base_images=base,
        seed=seed,
    )


if __name__ == "__main__":
    for make in (make_rotation_digits, make_shift_digits):
        data = make(n=1000, seed=0)
        print(
            f"{make.__name__}: images {data.images.shape} in [{data.images.min():.2f}, "
            f"{data.images.max():.2f}], u {data.u_names}, transform {data.transform_name} "
            f"[{data.transform.min():.1f}, {data.transform.max():.1f}], edges {data.true_edges}"
        )
