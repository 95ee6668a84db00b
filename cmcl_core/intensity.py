"""Scanner brightness and contrast removed before learning: intensity standardisation.

Radiographs from different scanners or sites differ in global exposure and contrast. A
representation learner then spends latent capacity on the scanner, and the latents it learns
for anatomy pick up a share of it: on the simulator's ``site`` and ``all`` presets
(``benchmarks/results/realism_grid``) the site leaked into latents that it does not cause.
Standardising intensities is the usual harmonisation step of multi-site imaging studies; two
modes are offered, both an affine map of each image's pixels onto a reference brightness
(``ref_mean``) and contrast (``ref_sd``), clipped to [0, 1]:

* ``group``: per level of a categorical ``u`` column (the site or scanner), the mean and
  standard deviation of all pixels of that level's images; every image of level ``k`` is mapped
  by ``ref_mean + ref_sd (x - mean_k) / sd_k``, where the reference is the average over levels.
  The map is the same for every image of a level, so differences *between images* of one site
  (a finding that brightens a region) are kept exactly; only the level's global gain and offset
  are removed. An effect of the site on one structure (a legitimate ``site -> z`` edge) moves the
  level's mean a little and is kept otherwise.
* ``image``: each image's own mean and standard deviation, for cohorts without a site column.
  It also removes global brightness that the anatomy itself causes (a large opacity), so it is
  the weaker choice where a site column exists.

Levels not seen in training (a new scanner) fall back to the ``image`` map onto the same
reference, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["INTENSITY_MODES", "IntensityMap"]

INTENSITY_MODES = ("none", "image", "group")
_CHUNK = 4096  # images per pass when computing statistics (bounds memory on memmaps)
_MIN_SD = 1e-6  # a flat image or level is shifted, not stretched


@dataclass(frozen=True)
class IntensityMap:
    """A fitted intensity standardisation.

    Attributes:
        mode: ``"image"`` or ``"group"``.
        ref_mean: reference pixel mean every image is mapped to.
        ref_sd: reference pixel standard deviation.
        levels: ``group``: the level codes seen in training, sorted.
        means: ``group``: pixel mean per level, aligned with ``levels``.
        sds: ``group``: pixel standard deviation per level.
    """

    mode: str
    ref_mean: float
    ref_sd: float
    levels: tuple[float, ...] = field(default=())
    means: tuple[float, ...] = field(default=())
    sds: tuple[float, ...] = field(default=())

    @classmethod
    def fit(cls, images: np.ndarray, mode: str, groups: np.ndarray | None = None) -> IntensityMap:
        """Statistics of the training images.

        Args:
            images: ``[n, C, H, W]`` in [0, 1] (numpy or memmap; read in chunks).
            mode: ``"image"`` or ``"group"``.
            groups: ``group``: ``[n]`` level code of each image.

        Raises:
            ValueError: an unknown mode, or ``group`` without one code per image.
        """
        if mode == "image":
            mean, sd = _image_stats(images)  # [n], [n]
            return cls("image", float(mean.mean()), float(sd.mean()))
        if mode != "group":
            raise ValueError(f"intensity mode must be 'image' or 'group', got {mode!r}")
        if groups is None or len(groups) != len(images):
            raise ValueError("intensity 'group' needs one level code per image")
        groups = np.asarray(groups, np.float64)
        levels = np.unique(groups)
        total = np.zeros((len(levels), 3))  # per level: pixels, sum, sum of squares
        for start in range(0, len(images), _CHUNK):
            x = np.asarray(images[start : start + _CHUNK], np.float64)
            x = x.reshape(len(x), -1)  # [b, C H W]
            at = np.searchsorted(levels, groups[start : start + _CHUNK])  # [b]
            np.add.at(
                total, at, np.stack([np.full(len(x), x.shape[1]), x.sum(1), (x * x).sum(1)], 1)
            )
        means = total[:, 1] / total[:, 0]  # [K]
        sds = np.sqrt(np.maximum(total[:, 2] / total[:, 0] - means**2, 0.0))  # [K]
        return cls(
            "group",
            float(means.mean()),
            float(sds.mean()),
            tuple(levels.tolist()),
            tuple(means.tolist()),
            tuple(sds.tolist()),
        )

    def apply(self, images: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """The standardised images, ``[n, C, H, W]`` float32 in [0, 1].

        Args:
            images: ``[n, C, H, W]`` in [0, 1].
            groups: ``group``: ``[n]`` level code of each image.
        """
        if self.mode == "image":
            mean, sd = _image_stats(images)
        else:
            if groups is None or len(groups) != len(images):
                raise ValueError("intensity 'group' needs one level code per image")
            mean, sd = self._group_stats(images, np.asarray(groups, np.float64))
        out = np.empty(images.shape, np.float32)
        for start in range(0, len(images), _CHUNK):
            stop = start + _CHUNK
            x = np.asarray(images[start:stop], np.float32)
            a = (self.ref_sd / np.maximum(sd[start:stop], _MIN_SD)).astype(np.float32)  # [b]
            b = (self.ref_mean - a * mean[start:stop]).astype(np.float32)  # [b]
            np.clip(
                x * a[:, None, None, None] + b[:, None, None, None], 0.0, 1.0, out=out[start:stop]
            )
        return out

    def _group_stats(self, images: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per image, its level's mean and sd; unseen levels use the image's own."""
        levels = np.asarray(self.levels)
        at = np.clip(np.searchsorted(levels, groups), 0, len(levels) - 1)  # [n]
        seen = levels[at] == groups  # [n]
        mean, sd = np.asarray(self.means)[at], np.asarray(self.sds)[at]  # [n], [n]
        if not seen.all():
            new = sorted({float(g) for g in groups[~seen]})
            logger.warning(
                "intensity: %d image(s) of level(s) %s not seen in training were "
                "standardised by their own statistics",
                int((~seen).sum()),
                new,
            )
            own_mean, own_sd = _image_stats(images[np.flatnonzero(~seen)])
            mean, sd = mean.copy(), sd.copy()
            mean[~seen], sd[~seen] = own_mean, own_sd
        return mean, sd

    def to_dict(self) -> dict:
        """A JSON-ready form (the model file)."""
        return {
            "mode": self.mode,
            "ref_mean": self.ref_mean,
            "ref_sd": self.ref_sd,
            "levels": list(self.levels),
            "means": list(self.means),
            "sds": list(self.sds),
        }

    @classmethod
    def from_dict(cls, d: dict) -> IntensityMap:
        """Inverse of :meth:`to_dict`."""
        return cls(
            d["mode"],
            float(d["ref_mean"]),
            float(d["ref_sd"]),
            tuple(d["levels"]),
            tuple(d["means"]),
            tuple(d["sds"]),
        )


def _image_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel mean and standard deviation of each image: ``[n]``, ``[n]`` float64."""
    mean, sd = np.empty(len(images)), np.empty(len(images))
    for start in range(0, len(images), _CHUNK):
        x = np.asarray(images[start : start + _CHUNK], np.float64).reshape(
            min(_CHUNK, len(images) - start), -1
        )  # [b, C H W]
        mean[start : start + len(x)], sd[start : start + len(x)] = x.mean(1), x.std(1)
    return mean, sd
