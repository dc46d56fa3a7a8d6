"""Neuralizer's augmentations on 2D slices (Czolbe & Dalca 2023, Supplement C).

Two kinds, with different scopes:

- **Task augmentations** make *new tasks*, so one random draw is applied identically to the target and to every
  context member of an episode (otherwise the context would not define the task). Here a tensor (M, C, H, W)
  holds one episode's M members; every class draws once per call: `IntensityMapping`, `SyntheticModality`,
  `SobelFilter`, `MaskInvert`, `MaskContour` (3 px band), `MaskDilation` (1 px), `PermuteChannels`,
  `DuplicateChannels`. Random flips are not used (they leak information for lateralised segmentation labels).
- **Data augmentation** makes *other subjects/acquisitions* and differs between members: `member_coords`
  (random affine ∘ elastic, diffeomorphic, sampling coordinates into a source slice) and `member_intensity`
  (gamma, smooth bias field, noise).

Everything is torch, seeded through one `RandomFields`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config_dict import DictConfig
from ..segmentation.head_synthesis import IntensityConfig, label_image
from ..segmentation.scoring import dilate
from ..training.synth import RandomFields
from ..transforms.sampling import identity_grid


@dataclass
class DataAugConfig(DictConfig):
    """Per-member (data) augmentation."""
    rotation_deg: float = 10.0
    scale: float = 0.1
    shear: float = 0.05
    translation: float = 3.0                        # pixels
    elastic_std: tuple[float, float] = (0.0, 2.0)   # velocity std, pixels
    elastic_spacing: tuple[float, float] = (8.0, 16.0)
    int_steps: int = 4
    gamma_std: float = 0.15
    bias: float = 0.2                               # max std of the log bias field
    noise: tuple[float, float] = (0.0, 0.02)


@dataclass
class TaskAugConfig(DictConfig):
    """Probabilities of the task augmentations (our choices; the paper's Fig. 10 tree is not in its text)."""
    mask: float = 0.3             # OneOf(MaskContour, MaskDilation) on segmentation outputs
    contour: float = 0.5          # ... of which MaskContour
    invert: float = 0.15          # MaskInvert (after the above)
    intensity: float = 0.35       # OneOf(IntensityMapping, SobelFilter) on the subject's appearance
    sobel: float = 0.3            # ... of which SobelFilter
    synthetic: float = 0.25       # SyntheticModality replaces the T1 appearance
    extra_channels: tuple[float, float, float] = (0.6, 0.25, 0.15)  # P(1, 2, 3 input modalities), segment tasks
    duplicate: float = 0.3        # DuplicateChannels: per empty channel
    permute: float = 0.5          # PermuteChannels


# --- data augmentation (differs per member) ---------------------------------------------------------------------
def member_coords(rng: RandomFields, out_shape: tuple[int, int], centres: torch.Tensor, config: DataAugConfig,
                  augment: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 2, H, W) source-slice pixel coordinates of an `out_shape` window centred at `centres` (n, 2) under a
    random affine ∘ elastic map per member; members where `augment` (n,) is False get the plain window."""
    c, n, dev = config, centres.shape[0], centres.device
    ident = identity_grid(out_shape, device=dev)
    mid = torch.tensor([(s - 1) / 2 for s in out_shape], device=dev).view(1, 2, 1, 1)
    plain = ident - mid + centres.view(n, 2, 1, 1)
    if augment is not None and not bool(augment.any()):
        return plain
    p = ident - mid
    if c.elastic_std[1] > 0:
        p = p + rng.diffeomorphism(n, out_shape, rng.scalar(*c.elastic_std), rng.scalar(*c.elastic_spacing),
                                   c.int_steps)
    angle = rng.uniform(-1.0, 1.0, (n,)) * math.radians(c.rotation_deg)
    scale = 1.0 + rng.uniform(-c.scale, c.scale, (n, 2))
    shear = rng.uniform(-c.shear, c.shear, (n,))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)      # (n, 2, 2)
    upper = torch.zeros(n, 2, 2, device=dev)
    upper[:, 0, 1] = shear
    a = rot @ torch.diag_embed(scale) @ (torch.eye(2, device=dev) + upper)
    shift = rng.uniform(-c.translation, c.translation, (n, 2)).view(n, 2, 1, 1)
    moved = torch.einsum("nrc,nchw->nrhw", a, p.expand(n, -1, -1, -1)) + centres.view(n, 2, 1, 1) + shift
    return moved if augment is None else torch.where(augment.view(n, 1, 1, 1), moved, plain)


def member_intensity(img: torch.Tensor, rng: RandomFields, config: DataAugConfig,
                     augment: torch.Tensor | None = None) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field and noise (on non-zero pixels), independently per member; images
    in [0, 1]; exact zeros (stripped background) stay zero."""
    c, n = config, img.shape[0]
    view = (n, 1, 1, 1)
    out = img.clamp(0, 1) ** torch.exp(rng.randn((n,)) * c.gamma_std).view(view)
    if c.bias > 0:
        out = out * torch.exp(rng.smooth_noise(n, 1, tuple(img.shape[2:]), max(img.shape[2:]) / 3.0)
                              * rng.uniform(0.0, c.bias, (n,)).view(view))
    out = out + rng.randn(out.shape) * rng.uniform(*c.noise, (n,)).view(view) * (img > 0)
    out = out.clamp_min(0.0)
    return out if augment is None else torch.where(augment.view(view), out, img)


# --- mask augmentations (segmentation outputs, (M, 1, H, W) in {0, 1}) ------------------------------------------
def _dilate(y: torch.Tensor, radius: int) -> torch.Tensor:
    return dilate(y[:, 0] > 0.5, radius)[:, None]


def _erode(y: torch.Tensor, radius: int) -> torch.Tensor:
    return ~dilate(y[:, 0] <= 0.5, radius)[:, None]


class MaskInvert:
    """Background becomes the structure."""

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - y


class MaskDilation:
    """The mask grown by `radius` pixels (8-connected ring)."""

    def __init__(self, radius: int = 1):
        self.radius = radius

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return _dilate(y, self.radius).to(y.dtype)


class MaskContour:
    """A band of `width` (odd) pixels centred on the mask's inner boundary: the 1 px contour, dilated."""

    def __init__(self, width: int = 3):
        self.width = width

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        contour = (y > 0.5) & ~_erode(y, 1)
        return _dilate(contour.to(y.dtype), (self.width - 1) // 2).to(y.dtype)


# --- intensity augmentations (one curve / filter per episode) ---------------------------------------------------
class IntensityMapping:
    """Remap intensities in [0, 1] by a random piecewise-linear curve through `bins` + 1 random knots (linear
    interpolation between neighbouring bin centres); exact zeros (background) stay zero."""

    def __init__(self, bins: tuple[int, int] = (4, 16)):
        self.bins = bins

    def __call__(self, x: torch.Tensor, rng: RandomFields) -> torch.Tensor:
        k = int(rng.scalar(self.bins[0], self.bins[1] + 1 - 1e-6))
        knots = rng.uniform(0.0, 1.0, (k + 1,))
        t = x.clamp(0, 1) * k
        lo = t.floor().clamp(max=k - 1).long()
        frac = t - lo
        out = knots[lo] * (1 - frac) + knots[lo + 1] * frac
        return torch.where(x > 0, out, torch.zeros_like(out))


class SobelFilter:
    """Gradient magnitude (Sobel), per channel, scaled to [0, 1] by the episode's maximum."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
        k = torch.stack([kx, kx.T])[:, None]
        flat = F.pad(x.flatten(0, 1)[:, None], (1, 1, 1, 1), mode="replicate")
        g = F.conv2d(flat, k).pow(2).sum(1).sqrt().view(x.shape)
        return g / g.amax().clamp_min(1e-6)


class SyntheticModality:
    """A new modality from a label map: a random intensity (and texture) per label, one look-up table for all
    members (they are laid side by side into one `head_synthesis.label_image` draw)."""

    def __init__(self, config: IntensityConfig | None = None):
        self.config = config or IntensityConfig(t1_prior=0.2)

    def __call__(self, labels: torch.Tensor, rng: RandomFields) -> torch.Tensor:
        m, _, h, w = labels.shape
        row = labels.permute(1, 2, 0, 3).reshape(1, 1, h, m * w)
        img = label_image(row.long(), rng, self.config)
        return img.reshape(1, h, m, w).permute(2, 0, 1, 3).contiguous()


# --- channel augmentations (inputs (M, C, H, W)) -----------------------------------------------------------------
class PermuteChannels:
    """One random order of the input channels for the whole episode."""

    def __call__(self, x: torch.Tensor, rng: RandomFields) -> torch.Tensor:
        return x[:, torch.randperm(x.shape[1], generator=rng.cpu_gen).to(x.device)]


class DuplicateChannels:
    """Each empty channel is, with probability `p`, overwritten by a random non-empty one."""

    def __init__(self, p: float = 0.3):
        self.p = p

    def __call__(self, x: torch.Tensor, rng: RandomFields) -> torch.Tensor:
        used = [c for c in range(x.shape[1]) if bool(x[:, c].any())]
        if not used:
            return x
        out = x.clone()
        for c in range(x.shape[1]):
            if c not in used and rng.scalar(0.0, 1.0) < self.p:
                out[:, c] = x[:, used[int(rng.scalar(0.0, len(used) - 1e-6))]]
        return out


def mask_augment(y: torch.Tensor, rng: RandomFields, config: TaskAugConfig) -> tuple[torch.Tensor, list[str]]:
    """Compose(OneOf(MaskContour, MaskDilation) p=`mask`, MaskInvert p=`invert`) with one draw per episode."""
    names: list[str] = []
    if rng.scalar(0.0, 1.0) < config.mask:
        contour = rng.scalar(0.0, 1.0) < config.contour
        y = (MaskContour() if contour else MaskDilation())(y)
        names.append("MaskContour" if contour else "MaskDilation")
    if rng.scalar(0.0, 1.0) < config.invert:
        y = MaskInvert()(y)
        names.append("MaskInvert")
    return y, names


def channel_augment(x: torch.Tensor, rng: RandomFields, config: TaskAugConfig) -> tuple[torch.Tensor, list[str]]:
    """DuplicateChannels then (p=`permute`) PermuteChannels, one draw per episode."""
    dup = DuplicateChannels(config.duplicate)(x, rng)
    names = [] if torch.equal(dup, x) else ["DuplicateChannels"]
    x = dup
    if rng.scalar(0.0, 1.0) < config.permute:
        x = PermuteChannels()(x, rng)
        names.append("PermuteChannels")
    return x, names
