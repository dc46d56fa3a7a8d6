"""`toporeg bench topology`: the run sizes and the data sets (inter-subject brain pairs, outlier groups) built
from the template cache, and where voxels are scored."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..topology.synthetic import TopologyCase, brain_cases, control_and_outlier_sets, dilate, template_arrays
from ..training.dataset_cache import DEFAULT_CACHE, load_cache
from ..training.synth import RandomFields

SUBJECTS = ("colin27", "mni152")
DIRECTIONS = (("colin27", "mni152"), ("mni152", "colin27"))  # (changed subject J, other subject I)
MASK_DILATION = 2


# --- sizes ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSize:
    """Counts and budgets of one run. brain_* and aware_* are per direction / cases; tests split over directions."""

    brain_2d: int = 8            # defaults: ~15–20 min on 2 busy CPU cores with a 2D DeepSim extractor
    brain_3d: int = 2
    cells: int = 10
    controls: int = 3
    tests: int = 4
    aware_2d: int = 6
    aware_3d: int = 2
    downsample: int = 1          # 2: 4 mm templates (2D slices 48 × 56), for quick runs and tests
    cell_shape: tuple[int, int] = (128, 128)
    iterations: int = 60         # ELBO fit iterations per direction
    preset: str = "default"      # engine preset of the shared registration
    n_boot: int = 1000

    def with_subjects(self, n: int | None, n_3d: int | None) -> "BenchSize":
        """--subjects N: N brain cases per direction, N cell pairs, N tests over max(2, N // 2) controls."""
        out = self if n is None else replace(self, brain_2d=n, cells=n, tests=n, controls=max(2, n // 2),
                                              aware_2d=max(1, n // 2))
        return out if n_3d is None else replace(out, brain_3d=n_3d, aware_3d=min(out.aware_3d, n_3d))


FULL = BenchSize()
QUICK = BenchSize(brain_2d=2, brain_3d=0, cells=2, controls=2, tests=2, aware_2d=1, aware_3d=0, downsample=2,
                  cell_shape=(48, 56), iterations=10, preset="fast", n_boot=200)


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class Templates:
    arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name → (image, brain mask, tissue)
    affine: np.ndarray                                             # voxel → RAS mm of the (3D) grid

    @property
    def spacing_mm(self) -> float:
        return float(abs(self.affine[0, 0]))


def load_templates(path: str | Path = DEFAULT_CACHE, downsample: int = 1) -> Templates:
    """The cached 2 mm templates, optionally box-averaged by `downsample` (masks: > ½, tissue: nearest)."""
    cache = load_cache(path)
    arrays = {name: template_arrays(cache, name) for name in SUBJECTS}
    affine = np.array(cache["grid_affine"], np.float64)
    if downsample > 1:
        arrays = {name: _coarsen(arrs, downsample) for name, arrs in arrays.items()}
        affine = affine @ np.diag([downsample, downsample, downsample, 1.0])
    return Templates(arrays, affine)


def _coarsen(arrays: tuple[np.ndarray, ...], f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-average image and mask by f (mask > ½), tissue labels by taking every f-th voxel."""
    image, mask, tissue = arrays

    def pool(a: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(torch.as_tensor(a, dtype=torch.float32)[None, None], f)[0, 0]

    return pool(image).numpy(), (pool(mask) > 0.5).numpy().astype(np.uint8), tissue[::f, ::f, ::f]


def _other_subject(templates: Templates, name: str, like: TopologyCase) -> torch.Tensor:
    """The other subject's image on the case's grid: the same axial slice for 2D cases, the volume in 3D."""
    image = torch.as_tensor(templates.arrays[name][0], dtype=torch.float32)
    k = like.meta.get("slice_k")
    return (image[..., k] if k is not None else image)[None, None]


def inter_subject_cases(templates: Templates, n: int, ndim: int, rng: RandomFields) -> list[TopologyCase]:
    """n changed-subject cases per direction, each with moving I replaced by the other subject's template."""
    cases = []
    for changed, other in DIRECTIONS:
        for case in brain_cases(*templates.arrays[changed], n, ndim, rng):
            case.moving = _other_subject(templates, other, case)
            case.meta["direction"] = f"{changed} changed vs {other}"
            cases.append(case)
    return cases


@dataclass
class OutlierGroup:
    controls: list[torch.Tensor]       # healthy, deformed images of one subject
    tests: list[TopologyCase]          # the other subject with lesions (J)
    direction: str


def outlier_groups(templates: Templates, n_controls: int, n_tests: int, rng: RandomFields) -> list[OutlierGroup]:
    """Per direction: controls from the other subject (deformed, re-contrasted, no change), lesion tests."""
    groups = []
    for d, (changed, other) in enumerate(DIRECTIONS):
        n = n_tests // 2 + (n_tests % 2 if d == 0 else 0)
        if n == 0:
            continue
        controls, _ = control_and_outlier_sets(*templates.arrays[other], n_controls, 0, 2, rng)
        tests = brain_cases(*templates.arrays[changed], n, 2, rng, ("lesion",))
        groups.append(OutlierGroup([c.fixed for c in controls], tests, f"{changed} tests vs {other} controls"))
    return groups


def scoring_mask(case: TopologyCase) -> np.ndarray | None:
    """Where voxels are scored: J's brain mask dilated by 2 voxels (None: the whole image, e.g. cells)."""
    if case.brain_mask is None:
        return None
    return dilate(case.brain_mask, MASK_DILATION)[0, 0].cpu().numpy()
