"""Feature maps f_k(·) for the topology likelihood N(f_k(J) | f_k(I)∘Φ, Σ_f): raw intensity or DeepSim semantics."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..geometry.tensors import pad_tensor_to_multiple
from ..models.deepsim import DeepSimExtractor


class IntensityFeatures:
    """f(I) = I: the MSE variant of the paper."""

    name = "intensity"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image


class SemanticFeatures:
    """The first three encoder stages of a frozen DeepSim-seg extractor, upsampled to full resolution and
    concatenated (the paper's 160-channel map for 32/64/64 channels). Features are taken from each image and then
    warped (extract-before-transform), so Σ_f is per channel and the per-voxel terms stay on the image grid."""

    name = "semantic"

    def __init__(self, extractor: DeepSimExtractor, stages: int = 3):
        self.extractor = extractor.eval()
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        self.stages = stages

    @classmethod
    def from_file(cls, path: str | Path, *, device: str | torch.device = "cpu") -> "SemanticFeatures":
        from ..models.weights import load_model
        model, _card = load_model(path, device=device)
        if not isinstance(model, DeepSimExtractor):
            raise ValueError(f"{path} is not a DeepSim extractor (architecture {type(model).__name__})")
        return cls(model)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        factor = 2 ** len(self.extractor.unet.encoder)
        padded, crop = pad_tensor_to_multiple(image, factor)
        mode = "bilinear" if image.dim() == 4 else "trilinear"
        feats = self.extractor.features(padded)[: self.stages]
        up = [F.interpolate(f, size=padded.shape[2:], mode=mode, align_corners=False) for f in feats]
        out = torch.cat(up, dim=1)
        return out[crop]


def make_features(kind: str, *, model: str | Path | None = None, device: str | torch.device = "cpu"):
    """'intensity' or 'semantic' (needs a DeepSim extractor: a bundled name or a weights file)."""
    if kind == "intensity":
        return IntensityFeatures()
    if kind == "semantic":
        if model is None:
            raise ValueError("semantic features need a DeepSim extractor (--deepsim-model NAME|PATH)")
        return SemanticFeatures.from_file(model, device=device)
    raise ValueError(f"unknown features {kind!r}: use 'semantic' or 'intensity'")
