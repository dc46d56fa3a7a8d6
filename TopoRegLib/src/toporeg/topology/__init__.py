"""Topological-change heatmaps ("Spot the Difference", Czolbe et al. NeurIPS 2021): where two images cannot be
matched by a smooth invertible deformation. `topology_heatmap` is the Volume-level entry point."""

from .control_stats import ControlStatistics, compute_control_statistics, outlier_from_statistics
from .optimize import PairFit, fit_pair
from .pipeline import TopologyResult, TopologySettings, display_map, topology_heatmap
from .prior import PriorParameters, fit_alpha_beta, kl_per_voxel, log_pdet_grid_laplacian
from .score import SymmetricScore, control_set_baselines, outlier_score, symmetric_score

__all__ = [
    "ControlStatistics", "PairFit", "PriorParameters", "SymmetricScore", "TopologyResult", "TopologySettings",
    "compute_control_statistics", "control_set_baselines", "display_map", "fit_alpha_beta", "fit_pair",
    "kl_per_voxel", "log_pdet_grid_laplacian", "outlier_from_statistics", "outlier_score", "symmetric_score",
    "topology_heatmap",
]
