"""DIO (Deep Implicit Optimization, Jena et al.): learned per-image multi-scale feature maps registered by a
black-box iterative solver; training backpropagates through the solver's optimum (Jacobian-free backprop).

The solver's transform (free-form displacement, SVF, affine) is a test-time choice: the same features serve all,
and prompts (label maps, landmarks) join the inner loss at inference without retraining.
"""

from .features import DIOFeatureNet, level_shape
from .fidelity import LabelTerm, LandmarkTerm, one_hot
from .sampler import linear_sample, linear_warp
from .solver import SolverResult, SolverSettings, phantom_step, solve

__all__ = ["DIOFeatureNet", "LabelTerm", "LandmarkTerm", "SolverResult", "SolverSettings", "level_shape",
           "linear_sample", "linear_warp", "one_hot", "phantom_step", "solve"]
