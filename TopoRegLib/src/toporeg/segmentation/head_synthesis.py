"""Whole heads around skull-stripped brains, SynthSeg-style (Billot et al. 2023): label maps, then images.

Only two template heads exist offline and one of them is held out for the benchmark, so a network that must
ignore skull, scalp, face and neck cannot learn that from real heads alone. Here every draw gets a new head:

1. `head_labels`: shells cut from the precomputed distance to the brain mask at random, spatially varying
   thicknesses (extra-cerebral CSF, skull with an optional marrow layer), a randomly offset and rippled head
   surface with skin under it, and the rest of the head (scalp, face, neck) split into random "soft tissue"
   labels by the argmax of smooth noise. Brain voxels keep their tissue labels (1 CSF, 2 GM, 3 WM).
2. `label_image`: a random intensity per label (T1-like ranges with probability `t1_prior`, else anything)
   plus texture; real brain intensities can be kept (`keep`) so only the head is synthetic.
3. `degrade` (after the geometric warp, in output space): blur and a coarser acquisition along a random axis
   (slab thickness); gamma, bias field, noise and percentile normalisation follow in `TemplateAugmenter`.

Segmentation targets never see these labels: they are 0 outside the brain. Torch only, any device, 2D or 3D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config_dict import DictConfig
from ..filters import gaussian_smooth
from ..training.synth import RandomFields

AIR, EXTRA_CSF, SKULL, MARROW, SKIN, SOFT = 0, 4, 5, 6, 7, 8
HEAD_LABEL_NAMES = {AIR: "air", 1: "CSF", 2: "GM", 3: "WM", EXTRA_CSF: "extra-cerebral CSF", SKULL: "skull",
                    MARROW: "marrow (diploe)", SKIN: "skin", SOFT: "soft tissue (scalp, face, neck; random labels)"}
# T1-like intensity ranges ([0, 1] ≈ air … white matter; fat may be brighter than WM)
T1_RANGES = {AIR: (0.0, 0.04), 1: (0.03, 0.3), 2: (0.35, 0.6), 3: (0.62, 0.9), EXTRA_CSF: (0.02, 0.3),
             SKULL: (0.0, 0.15), MARROW: (0.2, 0.9), SKIN: (0.3, 0.7)}
SOFT_RANGE = (0.05, 1.2)


@dataclass
class HeadConfig(DictConfig):
    csf_mm: tuple[float, float] = (0.5, 4.0)
    skull_mm: tuple[float, float] = (3.0, 9.0)
    thickness_jitter_mm: float = 1.5
    marrow: float = 0.6                                  # probability of a marrow layer inside the skull
    skin_mm: tuple[float, float] = (1.0, 3.5)
    surface_offset_mm: tuple[float, float] = (-4.0, 6.0)  # uniform shift of the head surface
    surface_ripple_mm: float = 4.0
    noise_spacing: tuple[float, float] = (6.0, 16.0)     # voxels between control points of the smooth fields
    soft_labels: int = 5
    soft_spacing: tuple[float, float] = (3.0, 10.0)


@dataclass
class IntensityConfig(DictConfig):
    t1_prior: float = 0.7                     # probability of T1-like ranges (else every label uniform in [0, 1])
    texture: tuple[float, float] = (0.0, 0.05)  # std of within-label fine texture
    blur: tuple[float, float] = (0.0, 1.2)    # Gaussian sigma, voxels
    resolution: float = 0.3                   # probability of a coarser acquisition along one random axis
    resolution_factor: tuple[float, float] = (1.5, 4.0)


def _field(rng: RandomFields, batch: int, shape: tuple[int, ...], spacing: tuple[float, float],
           channels: int = 1) -> torch.Tensor:
    return rng.smooth_noise(batch, channels, shape, rng.scalar(*spacing))


def _per_sample(rng: RandomFields, lo: float, hi: float, batch: int, ndim: int) -> torch.Tensor:
    return rng.uniform(lo, hi, (batch,)).view(batch, 1, *([1] * ndim))


def head_labels(tissue: torch.Tensor, brain_dist: torch.Tensor, head_dist: torch.Tensor, rng: RandomFields,
                config: HeadConfig | None = None, voxel_mm: float = 2.0) -> torch.Tensor:
    """(B, 1, *S) int64 head label map (HEAD_LABEL_NAMES) from tissue labels and the two distance maps (mm).

    The skull always closes around the brain: the head reaches at least one skin thickness past the skull."""
    c = config or HeadConfig()
    b, shape, nd = tissue.shape[0], tuple(tissue.shape[2:]), tissue.dim() - 2
    jitter = _field(rng, b, shape, c.noise_spacing, 3)
    t_csf = (_per_sample(rng, *c.csf_mm, b, nd) + c.thickness_jitter_mm * jitter[:, :1]).clamp_min(0.0)
    t_skull = (_per_sample(rng, *c.skull_mm, b, nd) + c.thickness_jitter_mm * jitter[:, 1:2]).clamp_min(voxel_mm)
    t_skin = _per_sample(rng, *c.skin_mm, b, nd)
    surface = _per_sample(rng, *c.surface_offset_mm, b, nd) + c.surface_ripple_mm * jitter[:, 2:3]
    bone_out = t_csf + t_skull
    # union of the (perturbed) head envelope and a minimal scalp around the skull, as a min of signed distances
    depth = torch.minimum(head_dist - surface, brain_dist - (bone_out + t_skin + voxel_mm))
    inside = depth < 0
    soft = SOFT + _field(rng, b, shape, c.soft_spacing, c.soft_labels).argmax(1, keepdim=True)
    labels = torch.where(inside, soft, torch.zeros_like(soft))
    labels[inside & (depth > -t_skin)] = SKIN
    labels[(brain_dist > 0) & (brain_dist <= t_csf)] = EXTRA_CSF
    labels[(brain_dist > t_csf) & (brain_dist <= bone_out)] = SKULL
    has_marrow = (rng.uniform(0, 1, (b,)) < c.marrow).view(b, 1, *([1] * nd))
    marrow = has_marrow & (brain_dist > t_csf + 0.3 * t_skull) & (brain_dist <= t_csf + 0.7 * t_skull)
    labels[marrow] = MARROW
    brain = tissue > 0
    labels[brain] = tissue[brain]
    labels[(brain_dist <= 0) & ~brain] = EXTRA_CSF  # inside the mask but unlabelled: never happens in the caches
    return labels


def _lut(rng: RandomFields, batch: int, n_labels: int, t1_like: torch.Tensor) -> torch.Tensor:
    """(B, n_labels) intensities: T1-like ranges where `t1_like` (B,) else uniform [0, 1] (air stays dark)."""
    free = rng.uniform(0.0, 1.0, (batch, n_labels))
    lo = torch.tensor([T1_RANGES.get(k, SOFT_RANGE)[0] for k in range(n_labels)], device=free.device)
    hi = torch.tensor([T1_RANGES.get(k, SOFT_RANGE)[1] for k in range(n_labels)], device=free.device)
    t1 = lo + (hi - lo) * rng.uniform(0.0, 1.0, (batch, n_labels))
    t1[:, EXTRA_CSF] = (t1[:, 1] + rng.uniform(-0.03, 0.03, (batch,))).clamp_min(0.0)  # the same fluid as CSF
    lut = torch.where(t1_like.view(batch, 1), t1, free)
    lut[:, AIR] = t1[:, AIR]
    return lut


def label_image(labels: torch.Tensor, rng: RandomFields, config: IntensityConfig | None = None, *,
                keep: torch.Tensor | None = None, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, *S) float image: a random intensity per label plus texture; where `keep_mask` the `keep` image."""
    c = config or IntensityConfig()
    b = labels.shape[0]
    n_labels = int(labels.max()) + 1 if labels.numel() else 1
    n_labels = max(n_labels, SOFT + 1)
    t1_like = rng.uniform(0.0, 1.0, (b,)) < c.t1_prior
    lut = _lut(rng, b, n_labels, t1_like)
    img = torch.gather(lut, 1, labels.flatten(1)).view(labels.shape)
    texture = rng.uniform(*c.texture, (b,)).view(b, *([1] * (labels.dim() - 1)))
    img = img + texture * rng.randn(img.shape) * (labels > 0)
    if keep is not None and keep_mask is not None:
        img = torch.where(keep_mask, keep, img)
    return img.clamp_min(0.0)


def degrade(img: torch.Tensor, rng: RandomFields, config: IntensityConfig | None = None) -> torch.Tensor:
    """Blur, then (with probability `resolution`) a thicker acquisition along one random axis (box average over
    the slab thickness, linear interpolation back), as when a 5 mm clinical scan is resampled to 2 mm."""
    c = config or IntensityConfig()
    sigma = rng.scalar(*c.blur)
    if sigma > 0.1:
        img = gaussian_smooth(img, sigma)
    if c.resolution > 0 and rng.scalar(0.0, 1.0) < c.resolution:
        shape = tuple(img.shape[2:])
        axis = int(rng.scalar(0.0, len(shape) - 1e-6))
        factor = rng.scalar(*c.resolution_factor)
        coarse = list(shape)
        coarse[axis] = max(int(round(shape[axis] / factor)), 2)
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        img = F.interpolate(F.adaptive_avg_pool2d(img, coarse) if len(shape) == 2 else
                            F.adaptive_avg_pool3d(img, coarse), size=shape, mode=mode, align_corners=False)
    return img
