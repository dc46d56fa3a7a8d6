"""CARL: Coordinate Attention with Refinement Layers (Greer et al.), voxel units, torch only.

A translation-equivariant coordinate-attention step Ξ at 1/4 resolution (recovers large offsets and different
fields of view) refined by two displacement U-Nets Ψ1 (1/2) and Ψ2 (full); trained label-free with symmetric
Gaussian LNCC + diffusion (warm-up) then GradICON. Trainer: `toporeg.training.train_carl`.
"""

from .attention import coordinate_attention
from .encoder import EquivariantEncoder
from .losses import diffusion, gradicon, lncc_gaussian
from .model import CARL, CoordinateAttentionStep, DisplacementStep, Down, TwoStep, upsample_displacement

__all__ = ["CARL", "CoordinateAttentionStep", "DisplacementStep", "Down", "EquivariantEncoder", "TwoStep",
           "coordinate_attention", "diffusion", "gradicon", "lncc_gaussian", "upsample_displacement"]
