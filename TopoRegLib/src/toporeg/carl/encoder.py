"""Translation-equivariant feature encoder for coordinate attention (CARL's Conv_θ, seed B.2/B.3).

Conv_θ(I∘U) = Conv_θ(I)∘U for integer translations U holds when every layer is a stride-1 convolution at one
resolution with no positional input: no striding, pooling or positional encodings. Layout as the reference:
Conv 1→C + ReLU, then residual blocks whose dilated convolutions (1, 2, 4) widen the receptive field
(radius 1 + 7·blocks voxels). No normalisation layer: the reference's BatchNorm uses batch statistics in
training (noisy at batch 1–4, seed B.9.12), and its eval-mode statistics would tie the features to the training
intensities; the per-voxel L2 normalisation at the end is the only one, and it is position-independent.
No biases (unlike the reference): a zero image region then has exactly zero features, so the zero padding and
any zero background get logit 0 against up to 16 for matching content, and the padded grid's own border looks
like background. Ξ thus stays equivariant when content moves relative to the key grid, whatever the weights
(with biases the background has a constant feature that competes with the content, and the set of background
keys changes with the translation). By positive homogeneity the features are also invariant to intensity scale.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.unet import conv_nd

FEATURE_NORM = 4.0  # ‖f‖ = 4, so ⟨q, k⟩ ∈ [−16, 16]: sharp but trainable attention with scale 1


class _ResidualBlock(nn.Module):
    """x + Conv(dil 4)(ReLU(Conv(dil 2)(ReLU(Conv(dil 1)(x)))))."""

    def __init__(self, ndim: int, channels: int):
        super().__init__()
        conv = conv_nd(ndim)
        self.body = nn.Sequential(
            conv(channels, channels, 3, padding=1, dilation=1, bias=False), nn.ReLU(),
            conv(channels, channels, 3, padding=2, dilation=2, bias=False), nn.ReLU(),
            conv(channels, channels, 3, padding=4, dilation=4, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EquivariantEncoder(nn.Module):
    """(B, 1, *S) image → (B, channels, *S) features of norm 4 per voxel, equivariant to integer translations
    away from the grid border (the caller zero-pads the image so the border is far from the content)."""

    def __init__(self, ndim: int, channels: int = 32, blocks: int = 2):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError("ndim must be 2 or 3")
        self.stem = nn.Sequential(conv_nd(ndim)(1, channels, 3, padding=1, bias=False), nn.ReLU())
        self.blocks = nn.Sequential(*[_ResidualBlock(ndim, channels) for _ in range(blocks)])
        self.receptive_radius = 1 + 7 * blocks

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.blocks(self.stem(image))
        return FEATURE_NORM * f / (1e-3 + f.norm(dim=1, keepdim=True))
