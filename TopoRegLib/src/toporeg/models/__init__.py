"""Learned registration: a shared U-Net, VoxelMorph-diff, DeepSim, losses, and weights with model cards.

Importing this package needs only torch, numpy and safetensors (no SimpleITK/nibabel), so training runs on
bare GPU machines; `learned_register` (file I/O, affine pre-alignment) is loaded on first use.
"""

from .deepsim import DeepSimExtractor, DeepSimLoss, enable_deepsim
from .losses import GaussianImageTerm, VxmDiffLoss, grid_degree, kl_laplacian, laplacian_quadratic, make_image_term
from .unet import UNet
from .voxelmorph_diff import VoxelMorphDiff, VxmDiffOutput
from .weights import (build_model, load_checkpoint, load_model, read_card, register_architecture, save_checkpoint,
                      save_model, sha256_file)

__all__ = [
    "DeepSimExtractor", "DeepSimLoss", "GaussianImageTerm", "UNet", "VoxelMorphDiff", "VxmDiffLoss", "VxmDiffOutput",
    "build_model", "enable_deepsim", "grid_degree", "kl_laplacian", "laplacian_quadratic", "learned_register",
    "load_checkpoint", "load_model", "make_image_term", "read_card", "register_architecture", "save_checkpoint",
    "save_model", "sha256_file",
]


def __getattr__(name: str):
    if name in ("learned_register", "LearnedRegistrationResult"):  # file I/O + engine: loaded on first use
        from . import inference
        return getattr(inference, name)
    raise AttributeError(name)
