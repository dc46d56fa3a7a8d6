"""Training-free registration by instance optimisation: affine, then SVF or free-form displacement."""

from .engine import register
from .result import RegistrationResult
from .settings import PRESETS, TRANSFORM_MODELS, RegistrationSettings, preset
from .similarity import available_similarities, make_similarity, register_similarity

__all__ = [
    "PRESETS", "RegistrationResult", "RegistrationSettings", "TRANSFORM_MODELS", "available_similarities",
    "make_similarity", "preset", "register", "register_similarity",
]
