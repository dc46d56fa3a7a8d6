"""Locating bundled resources (sample data, trained models) without any download."""

from .resources import model_dirs, resources_dir, sample_data_dir, sample_path

__all__ = ["model_dirs", "resources_dir", "sample_data_dir", "sample_path"]
