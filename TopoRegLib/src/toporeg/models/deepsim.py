"""DeepSim (Czolbe et al., MIDL 2021 / MedIA): semantic similarity from a frozen feature extractor.

Extractors share `UNet` with DeepSim's layer recipe: encoder stages [BatchNorm] → Conv(4, stride 2) → LeakyReLU
→ Conv3 → LeakyReLU → [dropout], giving features at 1/2, 1/4 and 1/8 resolution; decoder stages
Conv3 → LReLU → Conv3 → LReLU → upsample (→ concat skip); then Conv3 → LReLU → Conv3 → LReLU → Conv1 head.
  * DeepSim-seg: the U-Net trained to segment (softmax / cross-entropy), here CSF/GM/WM tissue.
  * DeepSim-ae: the same network without skip connections, trained as an autoencoder (sigmoid, MSE).

DeepSimLoss = 1 − (1/L) Σ_l mean_p cos(F_l,p(warped), F_l,p(fixed)): per-voxel cosine across channels, norm
sqrt(clamp(Σ f², 1e-6)), no mean-centring (optional), equal weights per stage. The extractor is frozen
(requires_grad False) and run in eval mode, but gradients still flow through it to the warped image
(transform-before-extraction). Voxels whose features are exactly zero in both images score 0, as in the
reference code; this is a constant and does not affect gradients.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet import UNet, conv_nd


class DeepSimExtractor(nn.Module):
    architecture = "DeepSimExtractor"

    def __init__(self, ndim: int = 3, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128), *,
                 kind: str = "seg", n_classes: int = 4, batch_norm: bool = True, dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if kind not in ("seg", "ae"):
            raise ValueError("kind must be 'seg' (segmentation U-Net) or 'ae' (autoencoder without skips)")
        self.ndim, self.kind = ndim, kind
        self.config = dict(ndim=ndim, in_channels=in_channels, channels=list(channels), kind=kind,
                           n_classes=n_classes, batch_norm=batch_norm, dropout=dropout, bias=bias)
        self.unet = UNet(ndim, in_channels, channels, list(reversed(channels)), (channels[0], channels[0]),
                         output_level=0, down_kernel=4, convs_per_stage=2, skips=kind == "seg",
                         batch_norm=batch_norm, dropout=dropout, bias=bias)
        self.head = conv_nd(ndim)(self.unet.out_channels, n_classes if kind == "seg" else in_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits (seg) or the sigmoid reconstruction (ae)."""
        y = self.head(self.unet(x))
        return y if self.kind == "seg" else torch.sigmoid(y)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder stage outputs at 1/2, 1/4, 1/8 (…) resolution: DeepSim's layers."""
        return self.unet.encode(x)


def _cosine_map(a: torch.Tensor, b: torch.Tensor, zero_mean: bool, eps: float) -> torch.Tensor:
    if zero_mean:
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    na = (a * a).sum(1).clamp_min(eps).sqrt()
    nb = (b * b).sum(1).clamp_min(eps).sqrt()
    return (a * b).sum(1) / (na * nb)  # (B, *S_l)


class DeepSimLoss:
    """1 − mean over stages of the mean per-voxel feature cosine; follows the `Similarity` protocol."""

    def __init__(self, extractor: nn.Module, levels: Sequence[int] | None = None, zero_mean: bool = False,
                 eps: float = 1e-6):
        self.extractor = extractor.requires_grad_(False).eval()
        self.levels, self.zero_mean, self.eps = levels, zero_mean, eps
        self._fixed_key = None
        self._fixed_feats: list[torch.Tensor] | None = None

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        ex = self.extractor.eval()
        ndim = getattr(ex, "ndim", x.dim() - 2)
        if x.dim() - 2 != ndim:
            raise ValueError(f"the DeepSim extractor is {ndim}D but the images are {x.dim() - 2}D")
        param = next(ex.parameters(), None)
        if param is not None and param.device != x.device:
            ex.to(x.device)
        feats = ex.features(x)
        return feats if self.levels is None else [feats[i] for i in self.levels]

    def _fixed_features(self, fixed: torch.Tensor) -> list[torch.Tensor]:
        # cached per tensor object (weak reference + in-place version), never by address: a freed tensor's
        # memory may be reused by the next fixed batch
        ref, version = self._fixed_key or (None, None)
        if ref is None or ref() is not fixed or version != fixed._version or self._fixed_feats is None:
            with torch.no_grad():
                self._fixed_feats = [f.detach() for f in self._features(fixed)]
            self._fixed_key = (weakref.ref(fixed), fixed._version)
        return self._fixed_feats

    def similarity_maps(self, warped: torch.Tensor, fixed: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage (B, 1, *S_l) cosine maps (1 − map = the per-layer loss heatmap)."""
        return [_cosine_map(a, b, self.zero_mean, self.eps).unsqueeze(1)
                for a, b in zip(self._features(warped), self._fixed_features(fixed))]

    def __call__(self, warped: torch.Tensor, fixed: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        sims = []
        for cos in self.similarity_maps(warped, fixed):
            if weight is None:
                sims.append(cos.mean())
            else:
                w = F.adaptive_avg_pool2d(weight, cos.shape[2:]) if cos.dim() == 4 else \
                    F.adaptive_avg_pool3d(weight, cos.shape[2:])
                w = w.expand_as(cos)
                sims.append((cos * w).sum() / w.sum().clamp_min(1e-6))
        return 1.0 - torch.stack(sims).mean()


def enable_deepsim(model_path_or_module, *, name: str = "deepsim", device=None) -> nn.Module:
    """Register DeepSim with the optimisation engine's similarity registry (`make_similarity("deepsim")`).

    Accepts an extractor module or the path of saved weights (safetensors + model card). Options given to
    the factory (`levels`, `zero_mean`) pass through `RegistrationSettings.extra["similarity_options"]`.
    """
    from ..errors import InputError
    from ..registration.similarity import register_similarity

    if isinstance(model_path_or_module, nn.Module):
        extractor = model_path_or_module
    else:
        from .weights import load_model
        extractor = load_model(model_path_or_module, device=device or "cpu")[0]
    if not hasattr(extractor, "features"):
        raise InputError(f"{type(extractor).__name__} is not a DeepSim feature extractor (no `features`)")

    def factory(levels=None, zero_mean: bool = False, **_ignored) -> DeepSimLoss:
        return DeepSimLoss(extractor, levels=levels, zero_mean=zero_mean)

    register_similarity(name, factory)
    return extractor
