"""`toporeg bench topology`: the topology-aware registration rows. Lesion cases with mass effect (intra-subject, so
the true field is known): plain vs topology-aware registration (similarity weights 1 − display map), displacement
error in the lesion, the ring around it and the brain."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from ..io import Volume
from ..topology.pipeline import TopologySettings, topology_heatmap
from ..topology.synthetic import TopologyCase, dilate
from .topology_cases import BenchSize
from .topology_scoring import Log


def _register_mu(fixed: Volume, moving: Volume, size: BenchSize, weights: Volume | None = None) -> torch.Tensor:
    """The engine's displacement (voxels, fixed grid) for two volumes on one grid."""
    from ..registration import preset, register
    from ..transforms.sampling import identity_grid
    reg = register(fixed, moving, preset(size.preset), weights=weights, device="cpu")
    nd = fixed.spatial_ndim
    return reg.moving_coords.float() - identity_grid(fixed.grid_shape)[:, :nd]


def _errors(mu: torch.Tensor, truth: torch.Tensor, lesion: torch.Tensor, brain: torch.Tensor,
            spacing: float) -> dict[str, float]:
    """Mean |μ − u_true| (mm) inside the lesion, in the ring 2–6 voxels around it (in the brain), in the brain."""
    err = ((mu - truth) ** 2).sum(1, keepdim=True).sqrt() * spacing
    ring = dilate(lesion, 6) & ~dilate(lesion, 2) & brain
    return {region: float(err[m].mean()) if bool(m.any()) else float("nan")
            for region, m in (("lesion", lesion), ("ring", ring), ("brain", brain))}


def aware_case(case: TopologyCase, affine: np.ndarray, size: BenchSize) -> dict[str, Any]:
    """Plain vs topology-aware registration of one lesion case (weights = 1 − display map of the training-free
    intensity heatmap, as `toporeg register --topology-aware`)."""
    arr = lambda t: t[0, 0].cpu().numpy().astype(np.float32)  # noqa: E731
    fixed, moving = Volume(arr(case.fixed), affine), Volume(arr(case.moving), affine)
    spacing = float(abs(affine[0, 0]))
    start = time.perf_counter()
    plain = _register_mu(fixed, moving, size)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    topo = topology_heatmap(fixed, moving, TopologySettings(preset=size.preset, iterations=size.iterations),
                            device="cpu")
    weights = Volume(1.0 - np.asarray(topo.display.data, np.float32), affine)
    aware = _register_mu(fixed, moving, size, weights)
    aware_s = time.perf_counter() - start
    args = (case.displacement, case.change_mask, case.brain_mask, spacing)
    return {"kind": case.kind, "plain": {**_errors(plain, *args), "seconds": plain_s},
            "aware": {**_errors(aware, *args), "seconds": aware_s}}


def aware_rows(name: str, cases: Sequence[TopologyCase], affine: np.ndarray, size: BenchSize,
               log: Log) -> dict[str, Any]:
    """Per-case errors and their means for one set of lesion cases."""
    per_case = []
    for i, case in enumerate(cases):
        log(f"[bench] {name} {i + 1}/{len(cases)} (plain vs topology-aware registration) …")
        per_case.append(aware_case(case, affine, size))
    mean = {variant: {k: float(np.nanmean([c[variant][k] for c in per_case])) for k in per_case[0][variant]}
            for variant in ("plain", "aware")} if per_case else {}
    return {"name": name, "cases": len(per_case), "spacing_mm": float(abs(affine[0, 0])), "per_case": per_case,
            "mean": mean}
