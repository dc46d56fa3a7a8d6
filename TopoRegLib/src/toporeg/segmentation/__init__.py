"""Segmentation with uncertainty maps (issue #6; Czolbe et al. IPMI 2021): one residual U-Net backbone, four
uncertainty methods (plain U-Net, deep ensemble, MC-dropout, probabilistic U-Net), entropy maps and the metrics of
the uncertainty benchmark. Interfaces: docs/dev/segmentation_contract.md.

Importing this package needs only torch and numpy (training nodes); `segment` (file geometry, resampling back to the
native grid) is loaded on first use.
"""

from .backbone import ResidualUNet
from .models import (METHODS, DeepEnsemble, MCDropoutUNet, PlainUNet, ProbabilisticUNet, SegmentationModel,
                     build_segmentation_model)
from .uncertainty import (dice_per_class, entropy, error_detection_auroc, expected_calibration_error,
                          generalised_energy_distance, mean_entropy_correct_wrong, predictive_mean, sample_diversity,
                          sampled_masks)

__all__ = [
    "METHODS", "DeepEnsemble", "MCDropoutUNet", "PlainUNet", "ProbabilisticUNet", "ResidualUNet",
    "SegmentationModel", "SegmentationResult", "build_segmentation_model", "dice_per_class", "entropy",
    "error_detection_auroc", "expected_calibration_error", "generalised_energy_distance",
    "mean_entropy_correct_wrong", "predictive_mean", "sample_diversity", "sampled_masks", "segment",
]


def __getattr__(name: str):
    if name in ("segment", "SegmentationResult"):
        from . import inference
        return getattr(inference, name)
    raise AttributeError(name)
