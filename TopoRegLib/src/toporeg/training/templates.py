"""Augmented real templates (MNI152, Colin27) with label maps, on the fixed network grid, torch/GPU.

Source: the one-file cache of `dataset_cache` (numpy only). Each drawn image is a template under an independent
random affine (rotation, scale, shear, translation about the grid centre) composed with an elastic deformation
(smooth SVF, scaling and squaring), then gamma, a smooth multiplicative bias field, Gaussian noise, and the same
percentile (0.5/99.5, clipped) normalisation as inference. Labels (tissue: 0 bg, 1 CSF, 2 GM, 3 WM) follow with
nearest-neighbour sampling. A registration pair is two such draws, from the same or from different templates, so
the network sees inter-subject (MNI ↔ Colin) and intra-subject pairs with known label correspondence.

2D (`ndim=2`): axial slices k of the 3D grid (within the brain), the fixed slice within ±`slice_jitter` of the
moving one, augmented in-plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config_dict import DictConfig
from ..transforms.sampling import identity_grid, sample
from .dataset_cache import INTENSITY_PERCENTILES, TEMPLATES, load_cache
from .synth import RandomFields


@dataclass
class AugmentConfig(DictConfig):
    rotation_deg: float = 8.0
    scale: float = 0.08
    shear: float = 0.03
    translation: float = 4.0                      # voxels
    elastic_std: tuple[float, float] = (0.0, 2.5)  # velocity std, voxels
    elastic_spacing: tuple[float, float] = (10.0, 24.0)
    int_steps: int = 5
    gamma_std: float = 0.15
    bias: float = 0.25
    noise: tuple[float, float] = (0.0, 0.03)
    same_template_prob: float = 0.3
    slice_jitter: int = 2


def _rotation(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    """(ndim, ndim) rotation from 1 (2D) or 3 (3D) angles in radians."""
    if ndim == 2:
        c, s = torch.cos(angles[0]), torch.sin(angles[0])
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    r = torch.eye(3, device=angles.device)
    for axis in range(3):
        c, s = torch.cos(angles[axis]), torch.sin(angles[axis])
        i, j = [a for a in range(3) if a != axis]
        m = torch.eye(3, device=angles.device)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        r = m @ r
    return r


class TemplateAugmenter:
    """Augmented single images (`images`) and registration pairs (`pairs`) from the template cache."""

    def __init__(self, cache: dict | str | Path, *, ndim: int = 3, seed: int = 0, device: str | torch.device = "cpu",
                 config: AugmentConfig | dict | None = None, label_key: str = "tissue"):
        cache = load_cache(cache) if isinstance(cache, (str, Path)) else cache
        self.ndim = ndim
        self.config = config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config)
        self.rng = RandomFields(seed, device)
        dev = self.rng.device
        self.volumes = torch.stack([torch.as_tensor(cache[f"{t}_image"], dtype=torch.float32) for t in TEMPLATES])
        self.labels = torch.stack([torch.as_tensor(cache[f"{t}_{label_key}"].astype(np.int64)) for t in TEMPLATES])
        self.volumes, self.labels = self.volumes[:, None].to(dev), self.labels[:, None].to(dev)
        self.n_labels = int(self.labels.max()) + 1
        self.shape = tuple(self.volumes.shape[2:2 + 3])
        if ndim == 2:
            area = (self.labels > 0).flatten(1, 3).float().sum(1)  # (T, K) brain voxels per axial slice
            good = (area > 0.3 * area.max(1, keepdim=True)[0]).all(0).nonzero()[:, 0]
            self.slice_range = (int(good.min()), int(good.max()))
            self.shape = self.shape[:2]
        self.meta = cache.get("meta", {})

    @property
    def device(self) -> torch.device:
        return self.rng.device

    # --- geometry ------------------------------------------------------------------------------------------
    def _coords(self, batch: int) -> torch.Tensor:
        """(B, ndim, *S) sampling coordinates of affine ∘ elastic, about the grid centre (voxels)."""
        c, r, nd = self.config, self.rng, self.ndim
        ident = identity_grid(self.shape, device=self.device)
        disp = r.diffeomorphism(batch, self.shape, r.scalar(*c.elastic_std), r.scalar(*c.elastic_spacing),
                                c.int_steps) if c.elastic_std[1] > 0 else torch.zeros((batch, nd, *self.shape),
                                                                                        device=self.device)
        points = ident + disp
        centre = torch.tensor([(n - 1) / 2 for n in self.shape], device=self.device).view(1, nd, *([1] * nd))
        out = []
        for b in range(batch):
            angles = r.uniform(-1.0, 1.0, (1 if nd == 2 else 3,)) * math.radians(c.rotation_deg)
            scale = torch.diag(1.0 + r.uniform(-c.scale, c.scale, (nd,)))
            shear = torch.eye(nd, device=self.device) + torch.triu(r.uniform(-c.shear, c.shear, (nd, nd)), 1)
            a = _rotation(angles, nd) @ scale @ shear
            t = r.uniform(-c.translation, c.translation, (nd,)).view(nd, *([1] * nd))
            p = points[b] - centre[0]
            out.append(torch.einsum("rc,c...->r...", a, p) + centre[0] + t)
        return torch.stack(out)

    def _intensity(self, img: torch.Tensor) -> torch.Tensor:
        c, r = self.config, self.rng
        b = img.shape[0]
        view = (b,) + (1,) * (img.dim() - 1)
        img = img.clamp(0, 1) ** torch.exp(r.randn((b,)) * c.gamma_std).view(view)
        if c.bias > 0:
            img = img * torch.exp(r.smooth_noise(b, 1, self.shape, max(self.shape) / 4.0) * r.scalar(0.0, c.bias))
        img = img + r.randn(img.shape) * r.scalar(*c.noise) * (img > 0)
        return percentile_normalise_torch(img)

    def _source(self, template: torch.Tensor, slices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        vols, labs = self.volumes[template], self.labels[template]
        if self.ndim == 2:
            idx = torch.arange(len(template), device=self.device)
            vols, labs = vols[idx, :, :, :, slices], labs[idx, :, :, :, slices]
        return vols, labs

    def coordinates(self, batch: int) -> torch.Tensor:
        """Random affine ∘ elastic sampling coordinates (B, ndim, *S), for datasets that warp their own arrays."""
        return self._coords(batch)

    def intensity(self, img: torch.Tensor) -> torch.Tensor:
        """Gamma, bias field, noise and percentile normalisation of images (B, 1, *S) drawn elsewhere."""
        return self._intensity(img)

    def _draw(self, template: torch.Tensor, slices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        vols, labs = self._source(template, slices)
        coords = self._coords(len(template))
        img = sample(vols, coords, mode="linear")
        lab = sample(labs.float(), coords, mode="nearest").round().long()
        return self._intensity(img), lab

    # --- public ----------------------------------------------------------------------------------------------
    def _slices(self, batch: int) -> torch.Tensor | None:
        return self.rng.randint(self.slice_range[0], self.slice_range[1] + 1, (batch,)) if self.ndim == 2 else None

    def images(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """dict(image (B, 1, *S) in [0, 1], labels (B, 1, *S) int64)."""
        template = self.rng.randint(0, len(TEMPLATES), (batch,))
        img, lab = self._draw(template, self._slices(batch))
        return {"image": img, "labels": lab}

    def pairs(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """dict(moving, fixed, moving_labels, fixed_labels) like `SynthMorphPairs.sample`."""
        c, r = self.config, self.rng
        t_fixed = r.randint(0, len(TEMPLATES), (batch,))
        other = (t_fixed + r.randint(1, len(TEMPLATES), (batch,))) % len(TEMPLATES)
        t_moving = torch.where(r.uniform(0, 1, (batch,)) < c.same_template_prob, t_fixed, other)
        s_fixed = self._slices(batch)
        s_moving = None
        if s_fixed is not None:
            s_moving = (s_fixed + r.randint(-c.slice_jitter, c.slice_jitter + 1, (batch,))).clamp(
                0, self.volumes.shape[-1] - 1)
        fixed, fixed_labels = self._draw(t_fixed, s_fixed)
        moving, moving_labels = self._draw(t_moving, s_moving)
        return {"moving": moving, "fixed": fixed, "moving_labels": moving_labels, "fixed_labels": fixed_labels}

    sample = pairs


def percentile_normalise_torch(img: torch.Tensor, n_samples: int = 65536, mask: torch.Tensor | None = None
                               ) -> torch.Tensor:
    """Per-sample percentile (0.5/99.5) → [0, 1] with clipping, from a fixed strided subsample (fast on GPU).

    THE definition of the networks' input normalisation in training (2D models: each axial slice is a sample) and,
    for 2D segmentation models, at inference too (`toporeg.segmentation.inference`, slice by slice). `mask`
    (broadcastable to `img`): only these voxels give the percentiles (inference: the image's field of view, not
    the network grid's padding); all voxels are mapped."""
    flat = img.flatten(1)
    step = max(flat.shape[1] // n_samples, 1)
    lo_q, hi_q = (p / 100.0 for p in INTENSITY_PERCENTILES)
    levels = torch.tensor([lo_q, hi_q], device=img.device, dtype=img.dtype)
    if mask is None:
        q = torch.quantile(flat[:, ::step], levels, dim=1)
    else:
        keep = torch.broadcast_to(mask.bool(), img.shape).flatten(1)[:, ::step]
        q = torch.nanquantile(torch.where(keep, flat[:, ::step], torch.full_like(flat[:, ::step], float("nan"))),
                              levels, dim=1).nan_to_num(0.0)
    view = (-1,) + (1,) * (img.dim() - 1)
    lo, hi = q[0].view(view), q[1].view(view)
    return ((img - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
