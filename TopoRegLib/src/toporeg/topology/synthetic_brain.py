"""Brain-template cases: pairs from a real template (axial slices or volumes) with one inserted change, the outlier
setting's controls and tests, and held-out validation pairs for training."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..training.dataset_cache import TEMPLATES, load_cache
from ..training.synth import RandomFields
from ..transforms.integration import compose
from .synthetic_changes import BRAIN_KINDS, _change
from .synthetic_common import Rng, _image, _mask, _warp_mask, as_rng
from .synthetic_pairs import TopologyCase, deform, random_intensity_change, random_smooth_deformation


def _template_tensors(image, mask, tissue, ndim: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    out = (_image(image, device), _mask(mask, device), _image(tissue, device).round() if tissue is not None else None)
    if out[0].dim() - 2 < ndim:
        raise ValueError(f"a {out[0].dim() - 2}D template cannot give {ndim}D cases")
    return out


def _needs_slice(image: torch.Tensor, ndim: int) -> bool:
    """2D cases from a 3D template take axial slices; a 2D template is used as it is."""
    return ndim == 2 and image.dim() == 5


def _axial_slice(volumes: Sequence[torch.Tensor | None], brain: torch.Tensor, rng: RandomFields,
                 jitter: int) -> tuple[list[torch.Tensor | None], int]:
    """Axial (k) slices near the slice of largest brain area, ± jitter."""
    area = brain[0, 0].flatten(0, 1).sum(0)
    k = int(area.argmax()) + int(rng.randint(-jitter, jitter + 1, ()))
    k = min(max(k, 0), brain.shape[-1] - 1)
    return [v[..., k] if v is not None else None for v in volumes], k


def _pair(changed: torch.Tensor, mask: torch.Tensor, brain: torch.Tensor, moving: torch.Tensor,
          mass: torch.Tensor | None, rng: RandomFields, kind: str, meta: dict, max_displacement: float,
          intensity: bool) -> TopologyCase:
    """Deform and re-contrast the changed image into the fixed image J; the original is the moving image I."""
    u = random_smooth_deformation(changed.shape[2:], rng, max_displacement)
    fixed, fixed_mask = deform(changed, mask, u)
    fixed_brain = _warp_mask(_warp_mask(brain, mass) if mass is not None else brain, u)
    truth = compose(mass, u) if mass is not None else u
    if intensity:
        fixed = random_intensity_change(fixed, rng)
    return TopologyCase(fixed, moving, fixed_mask, fixed_brain, kind, meta, truth)


def brain_cases(template_image, template_mask, template_tissue, n: int, ndim: int, rng: Rng,
                kinds: Sequence[str] = BRAIN_KINDS, *, max_displacement: float = 3.0, intensity: bool = True,
                slice_jitter: int = 4, options: dict[str, dict] | None = None) -> list[TopologyCase]:
    """n pairs from one real template (kinds in turn): fixed = template + change, deformed and re-contrasted;
    moving = the template. ndim = 2 uses axial slices near the largest brain slice of a 3D template (a 2D template
    as it is). `options[kind]`: keyword arguments of that kind's generator, e.g. {"lesion": {"radius": (4, 9)}}."""
    rng = as_rng(rng)
    image, brain, tissue = _template_tensors(template_image, template_mask, template_tissue, ndim, rng.device)
    cases = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        meta: dict = {"kind": kind}
        img, br, tis = image, brain, tissue
        if _needs_slice(image, ndim):
            (img, br, tis), meta["slice_k"] = _axial_slice((image, brain, tissue), brain, rng, slice_jitter)
        changed, mask, mass = _change(kind, img, br, tis, rng, dict((options or {}).get(kind, {})))
        cases.append(_pair(changed, mask, br, img, mass, rng, kind, meta, max_displacement, intensity))
    return cases


def control_and_outlier_sets(template_image, template_mask, template_tissue, n_controls: int, n_tests: int,
                             ndim: int, rng: Rng, *, max_displacement: float = 3.0, slice_jitter: int = 4,
                             lesion: dict | None = None) -> tuple[list[TopologyCase], list[TopologyCase]]:
    """The outlier setting: healthy-looking controls (template, random smooth deformation and intensity change, empty
    change mask, kind "control") and test images with lesions (kind "lesion"), all with moving = the template.
    Score a test J against the controls' `fixed` images with Q."""
    rng = as_rng(rng)
    image, brain, tissue = _template_tensors(template_image, template_mask, template_tissue, ndim, rng.device)
    controls = []
    for _ in range(n_controls):
        meta: dict = {"kind": "control"}
        img, br = image, brain
        if _needs_slice(image, ndim):
            (img, br), meta["slice_k"] = _axial_slice((image, brain), brain, rng, slice_jitter)
        empty = torch.zeros_like(br)
        controls.append(_pair(img, empty, br, img, None, rng, "control", meta, max_displacement, True))
    tests = brain_cases(image, brain, tissue, n_tests, ndim, rng, ("lesion",), max_displacement=max_displacement,
                        slice_jitter=slice_jitter, options={"lesion": lesion or {}})
    return controls, tests


def template_arrays(cache: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, brain mask, tissue labels) of template `name` ("mni152", "colin27") from a loaded template cache."""
    return cache[f"{name}_image"], cache[f"{name}_mask"], cache[f"{name}_tissue"]


def validation_pairs(cache: dict | str | Path, *, ndim: int, n: int, seed: int, device: str | torch.device = "cpu",
                     kinds: Sequence[str] = ("lesion",)) -> list[dict[str, torch.Tensor]]:
    """Held-out pairs for a training-time AUC, as dicts (fixed, moving, change, brain): `brain_cases` alternating
    over the cache's templates, on the network grid."""
    cache = load_cache(cache) if isinstance(cache, (str, Path)) else cache
    rng = RandomFields(seed, device)
    out = []
    for i in range(n):
        template = template_arrays(cache, TEMPLATES[i % len(TEMPLATES)])
        case = brain_cases(*template, 1, ndim, rng, (kinds[i % len(kinds)],))[0]
        out.append({"fixed": case.fixed, "moving": case.moving, "change": case.change_mask, "brain": case.brain_mask})
    return out
