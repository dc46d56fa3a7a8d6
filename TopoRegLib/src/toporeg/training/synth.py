"""SynthMorph-style synthetic registration pairs (Hoffmann et al. 2022): no data, no downloads.

One random *base* label map (argmax of J smooth noise images) is deformed twice by independent random
diffeomorphisms (smooth SVFs integrated by scaling and squaring), giving fixed and moving label maps with
known correspondence. Each becomes an image: per-label intensities (shared by the pair when
`same_contrast`, as an MSE/Gaussian likelihood needs), Gaussian blur, a smooth multiplicative bias field,
gamma, additive noise, then min–max to [0, 1]. Everything is torch on the generator's device (GPU-capable),
2D or 3D, and deterministic for a seed (per device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config_dict import DictConfig
from ..filters import gaussian_smooth
from ..transforms.integration import integrate_svf
from ..transforms.sampling import resize_displacement, warp_labels


@dataclass
class SynthConfig(DictConfig):
    n_labels: int = 16
    label_spacing: tuple[float, float] = (10.0, 28.0)     # control-point spacing (voxels) of the label noise
    label_warp: float = 3.0                              # max std (voxels) of the SVF roughening label shapes
    deform_std: tuple[float, float] = (0.5, 3.0)         # velocity std (voxels) of each image's deformation
    deform_spacing: tuple[float, float] = (8.0, 24.0)    # control-point spacing (voxels) of the velocities
    int_steps: int = 5
    blur: tuple[float, float] = (0.0, 1.0)               # Gaussian sigma (voxels)
    bias: float = 0.3                                    # max std of the log bias field
    gamma_std: float = 0.1
    noise: tuple[float, float] = (0.0, 0.05)
    same_contrast: bool = True
    zero_background: float = 0.5                         # probability that label 0 is black (brain-like)


class RandomFields:
    """Seeded random numbers and smooth random fields on one device.

    Tensors come from a generator on the device; Python scalars (sizes, amplitudes) from a separate CPU
    generator, so drawing them never waits for the GPU.
    """

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self.cpu_gen = torch.Generator().manual_seed(int(seed) + 7919)

    def uniform(self, lo: float, hi: float, size=()) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=self.gen, device=self.device)

    def scalar(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.cpu_gen))

    def randn(self, size) -> torch.Tensor:
        return torch.randn(size, generator=self.gen, device=self.device)

    def randint(self, lo: int, hi: int, size=()) -> torch.Tensor:
        """Integers in [lo, hi)."""
        return torch.randint(lo, hi, size, generator=self.gen, device=self.device)

    def smooth_noise(self, batch: int, channels: int, shape, spacing: float) -> torch.Tensor:
        """(B, C, *shape) smooth noise: unit Gaussians on a coarse grid (`spacing` voxels), linearly upsampled."""
        coarse = [max(int(math.ceil((n - 1) / spacing)) + 1, 2) for n in shape]
        noise = self.randn((batch, channels, *coarse))
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        return F.interpolate(noise, size=tuple(shape), mode=mode, align_corners=True)

    def diffeomorphism(self, batch: int, shape, std: float, spacing: float, steps: int = 5) -> torch.Tensor:
        """(B, ndim, *shape) voxel displacement of exp(v), v smooth with per-component std ≈ `std` voxels.

        Integrated on a half-resolution grid (the fields are smooth at ≥ 4 voxels) and resized, as in VM-diff.
        """
        half = tuple(max(int(n) // 2, 2) for n in shape)
        scale = (half[0] - 1) / max(int(shape[0]) - 1, 1)
        v = self.smooth_noise(batch, len(shape), half, max(spacing * scale, 1.0)) * (std * scale)
        return resize_displacement(integrate_svf(v, steps), tuple(shape))

    def reseed(self, seed: int) -> None:
        """Restart both generators from `seed`, as a new `RandomFields(seed)` would (per-sample draws)."""
        self.gen.manual_seed(int(seed))
        self.cpu_gen.manual_seed(int(seed) + 7919)

    def child(self) -> torch.Generator:
        """A new device generator seeded from this stream (e.g. a model's noise for one drawn sample)."""
        return torch.Generator(device=self.device).manual_seed(int(torch.randint(0, 2**62, (), generator=self.cpu_gen)))

    def state(self) -> torch.Tensor:
        """Both generators' states as one uint8 tensor (CPU part first)."""
        return torch.cat([self.cpu_gen.get_state(), self.gen.get_state()])

    def set_state(self, state: torch.Tensor) -> None:
        n = self.cpu_gen.get_state().numel()
        self.cpu_gen.set_state(state[:n].clone())
        self.gen.set_state(state[n:].clone())


def normalise01(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min–max to [0, 1]."""
    flat = x.flatten(1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    view = (-1,) + (1,) * (x.dim() - 1)
    return (x - lo.view(view)) / (hi - lo).clamp_min(1e-6).view(view)


class SynthMorphPairs:
    """`sample(batch)` → dict(moving, fixed: (B, 1, *S) float in [0, 1]; moving_labels, fixed_labels: int64)."""

    def __init__(self, shape, config: SynthConfig | dict | None = None, *, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.shape = tuple(int(n) for n in shape)
        self.config = config if isinstance(config, SynthConfig) else SynthConfig.from_dict(config)
        self.rng = RandomFields(seed, device)

    @property
    def device(self) -> torch.device:
        return self.rng.device

    def label_maps(self, batch: int) -> torch.Tensor:
        c, r = self.config, self.rng
        noise = r.smooth_noise(batch, c.n_labels, self.shape, r.scalar(*c.label_spacing))
        labels = noise.argmax(1, keepdim=True)
        if c.label_warp > 0:
            disp = r.diffeomorphism(batch, self.shape, r.scalar(0.0, c.label_warp), r.scalar(*c.deform_spacing),
                                    c.int_steps)
            labels = warp_labels(labels, disp)
        return labels

    def _lut(self, batch: int) -> torch.Tensor:
        c, r = self.config, self.rng
        lut = r.uniform(0.0, 1.0, (batch, c.n_labels))
        black = r.uniform(0.0, 1.0, (batch,)) < c.zero_background
        lut[:, 0] = torch.where(black, torch.zeros_like(lut[:, 0]), lut[:, 0])
        return lut

    def image(self, labels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
        c, r = self.config, self.rng
        b = labels.shape[0]
        img = torch.gather(lut, 1, labels.flatten(1)).view(labels.shape)
        sigma = r.scalar(*c.blur)
        if sigma > 0.05:
            img = gaussian_smooth(img, sigma)
        if c.bias > 0:
            spacing = max(self.shape) / 4.0
            img = img * torch.exp(r.smooth_noise(b, 1, self.shape, spacing) * r.scalar(0.0, c.bias))
        img = normalise01(img)
        gamma = torch.exp(r.randn((b,)) * c.gamma_std).view(b, *([1] * (img.dim() - 1)))
        img = img.clamp_min(0) ** gamma
        img = img + r.randn(img.shape) * r.scalar(*c.noise)
        return normalise01(img)

    def sample(self, batch: int = 1) -> dict[str, torch.Tensor]:
        c, r = self.config, self.rng
        base = self.label_maps(batch)
        out: dict[str, torch.Tensor] = {}
        lut = self._lut(batch)
        for role in ("fixed", "moving"):
            disp = r.diffeomorphism(batch, self.shape, r.scalar(*c.deform_std), r.scalar(*c.deform_spacing),
                                    c.int_steps)
            labels = warp_labels(base, disp)
            out[f"{role}_labels"] = labels
            out[role] = self.image(labels, lut if c.same_contrast else self._lut(batch))
        return out
