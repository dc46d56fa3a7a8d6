"""Neuralizer at inference on real volumes: one target, a context set of (image, output) pairs, any grids.

1. Network grid: the target's canonical (closest RAS) axes at the card's spacing (`neuralizer.spacing_mm`, 2 mm)
   over its whole field of view, padded to a multiple of `model.divisor` (`segmentation.inference.network_grid`).
   A 2D target keeps its own plane. Every image is percentile-normalised (0.5/99.5, clipped) over its native voxels.
2. Each context image (moving) is registered affinely to the target on that grid (fixed; the optimisation engine,
   `ALIGN_SETTINGS`; `align=False` skips), then context image (linear) and output are resampled onto the grid through
   that affine: label maps nearest after binarisation (`context_mask`), image outputs linear after normalisation.
   An affine that lowers the context's correlation with the target (by > `ALIGN_TOLERANCE`) is not used (warning).
3. Slices along `plane` (axial ⟂ S, coronal ⟂ A, sagittal ⟂ R; the slice keeps the two other canonical axes in
   R, A, S order) go through the network in batches; each context contributes its slice at the same position;
   sets smaller than `context_size` are bootstrapped (paper Sec. 3.5; the generator re-seeded per batch).
4. Back to the target's native grid, linearly: segment tasks the probability `segment_probability(y)`, then
   ≥ 0.5 → uint8 mask; image tasks the output clipped to [0, 1] (the training range), then mapped to the context
   outputs' intensity units by inverting their percentile normalisation with the mean (lo, hi) of the outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..geometry import normalize_to_bounds, percentile_bounds, resample_to, tensor_to_volume, volume_to_tensor
from ..io import Volume, save_volume
from ..models.model_grid import PERCENTILES
from ..progress import CancelToken, Progress, ticker
from ..registration import RegistrationSettings, register
from ..segmentation.inference import card_spacing, check_image, domain_messages, network_grid
from .bootstrap import bootstrap_context
from .model import Neuralizer, segment_probability

TASKS = ("segment", "image")
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the canonical (R, A, S) axis a plane is perpendicular to
ALIGN_SETTINGS = RegistrationSettings(transform="affine", similarity="lncc", affine_levels=(4, 2),
                                      affine_iterations=(40, 20))
POOR_CORRELATION = 0.3  # warn below: a context that does not look like the target after alignment
POOR_COVERAGE = 0.5     # warn below: a context that covers less than half of the target's field of view
ALIGN_TOLERANCE = 0.02  # an alignment that lowers the context's correlation with the target more is not used


@dataclass
class NeuralizeResult:
    """`prediction` (segment: uint8 0/1; image: float32 in the context outputs' units) and `probability`
    (segment only) on the target's native grid; `report`: settings, per-context alignment, timings, warnings."""

    prediction: Volume
    probability: Volume | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> dict[str, str]:
        """Write prediction.nii.gz (+ probability.nii.gz); returns role → file name."""
        files = {"prediction": "prediction.nii.gz"}
        save_volume(self.prediction, Path(out_dir) / files["prediction"])
        if self.probability is not None:
            files["probability"] = "probability.nii.gz"
            save_volume(self.probability, Path(out_dir) / files["probability"])
        return files


def context_mask(label: Volume, label_value: int | None = None) -> Volume:
    """The binary (uint8 0/1) mask a segment task's context output stands for: voxels == `label_value`, or any
    non-zero label when None. An empty mask is an error (it would teach the network 'nothing here')."""
    data = np.asarray(label.data)
    mask = data != 0 if label_value is None else data == label_value
    if not mask.any():
        path = label.meta.get("path")
        if label_value is None:
            raise InputError("the context label map is empty (no non-zero voxel)", path)
        present = np.unique(data[np.isfinite(data)] if data.dtype.kind == "f" else data)
        shown = ", ".join(f"{v:g}" for v in present[:12]) + (", …" if present.size > 12 else "")
        raise InputError(f"label {label_value} does not occur in the context label map (labels present: {shown})",
                         path)
    return label.with_data(mask.astype(np.uint8), is_label=True)


def load_neuralizer(model: torch.nn.Module | str | Path, device: torch.device,
                    card: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on `device`, its card) from a module, a bundled/user model name or a weights path."""
    if not isinstance(model, torch.nn.Module):
        from ..models.catalogue import resolve_model
        from ..models.weights import load_model

        path = resolve_model(model)
        model, card = load_model(path, device=device)
        if not isinstance(model, Neuralizer):
            raise InputError(f"not a Neuralizer model (architecture {card.get('architecture')})", path)
    return model.to(device).eval(), dict(card or getattr(model, "card", None) or {})


def _checked(volume: Volume, role: str, *, label: bool = False) -> Volume:
    """`check_image` with the role named in the message ('context 3 output: image contains 5 NaN voxels')."""
    try:  # label maps: geometry and a single channel; emptiness is `context_mask`'s business
        return check_image(replace(volume, is_label=True) if label else volume)
    except InputError as exc:
        raise InputError(f"{role}: {exc.problem}", exc.path) from None


def _checked_contexts(contexts: Sequence[tuple[Volume, Volume]], nd: int, segment: bool, label_value: int | None
                      ) -> tuple[list[tuple[Volume, Volume]], list[dict[str, Any]]]:
    """Validated pairs (segment outputs binarised by `context_mask`) and their file paths for the report."""
    pairs, paths = [], []
    for i, (image, output) in enumerate(contexts, 1):
        image = _checked(image, f"context {i} image")
        output = _checked(output, f"context {i} output", label=segment)
        if image.spatial_ndim != nd:
            raise InputError(f"context {i} is {image.spatial_ndim}D but the target is {nd}D", image.meta.get("path"))
        if not output.same_grid(image):
            raise InputError(f"context {i}: its output ({output.describe()}) is not on its image's grid "
                             f"({image.describe()}); resample the output onto the image first",
                             output.meta.get("path"))
        paths.append({"image": image.meta.get("path"), "output": output.meta.get("path")})
        pairs.append((image, context_mask(output, label_value) if segment else output))
    return pairs, paths


def _normalised(volume: Volume) -> tuple[Volume, tuple[float, float]]:
    """Percentile-normalised (0.5/99.5, clipped) float32 copy over the native voxels, and its (lo, hi)."""
    data = np.asarray(volume.data, np.float32)
    lo, hi = percentile_bounds(data, *PERCENTILES)
    return volume.with_data(normalize_to_bounds(data, lo, hi), is_label=False), (lo, hi)


def _grid_tensor(volume: Volume, grid: Volume, dev, *, transform=None, mode: str = "linear") -> torch.Tensor:
    """`volume` sampled on the network grid, as a (*grid) float tensor (outside: 0)."""
    res = resample_to(volume, grid, transform=transform, interpolation=mode, device=dev)
    return volume_to_tensor(res, device=dev)[0, 0]


def _correlation(a: torch.Tensor, b: torch.Tensor, inside: torch.Tensor) -> float:
    x, y = a[inside].double(), b[inside].double()
    x, y = x - x.mean(), y - y.mean()
    d = torch.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


@dataclass
class _NetworkTarget:
    """The target on the network grid: normalised image and field-of-view mask, both (*grid) tensors."""

    grid: Volume
    image: torch.Tensor
    inside: torch.Tensor


def _place_context(i: int, image: Volume, output: Volume, net: _NetworkTarget, *, align: bool, segment: bool,
                   dev, warnings: list[str], progress: Progress
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float] | None, dict[str, Any]]:
    """Context `i` on the network grid: (image, output, output's (lo, hi) for image tasks, report entry)."""
    t0, affine = time.perf_counter(), np.eye(4)
    image_n, _ = _normalised(image)
    moved = _grid_tensor(image_n, net.grid, dev)
    r = _correlation(moved, net.image, net.inside)
    entry: dict[str, Any] = {}
    if align:
        fixed = net.grid.with_data(net.image.cpu().numpy())
        fixed_mask = net.grid.with_data(net.inside.cpu().numpy().astype(np.uint8))
        reg = register(fixed, image_n, ALIGN_SETTINGS, fixed_mask=fixed_mask, device=dev, progress=progress)
        aligned = _grid_tensor(image_n, net.grid, dev, transform=reg.affine_ras)
        r_aligned = _correlation(aligned, net.image, net.inside)
        used = r_aligned >= r - ALIGN_TOLERANCE
        entry = {"registered_affine_ras": np.round(reg.affine_ras, 6).tolist(), "alignment_used": used,
                 "correlation_before": round(r, 4)}
        if used:
            moved, affine, r = aligned, reg.affine_ras, r_aligned
        else:
            warnings.append(f"aligning context {i} lowered its correlation with the target (r {r:.2f} → "
                            f"{r_aligned:.2f}): it is used as given")
    lo_hi = None
    if segment:
        moved_out = _grid_tensor(output, net.grid, dev, transform=affine, mode="nearest")
    else:
        output_n, lo_hi = _normalised(output)
        moved_out = _grid_tensor(output_n, net.grid, dev, transform=affine)
    ones = image.with_data(np.ones(image.data.shape, np.uint8))
    covered = _grid_tensor(ones, net.grid, dev, transform=affine, mode="nearest") > 0.5
    coverage = float(covered[net.inside].float().mean())
    entry.update({"affine_ras": np.round(affine, 6).tolist(), "correlation": round(r, 4),
                  "coverage": round(coverage, 4), "seconds": round(time.perf_counter() - t0, 4)})
    if r < POOR_CORRELATION:
        warnings.append(f"context {i} correlates poorly with the target{' after alignment' if align else ''} "
                        f"(r = {r:.2f}): check that it shows the same anatomy and contrast")
    if coverage < POOR_COVERAGE:
        warnings.append(f"context {i} covers only {100 * coverage:.0f} % of the target's field of view")
    return moved, moved_out, lo_hi, entry


def _predict(model, target: torch.Tensor, c_in: torch.Tensor, c_out: torch.Tensor, axis: int, slices: list[int], *,
             size: int, seed: int, batch: int, segment: bool, tick) -> torch.Tensor:
    """Network output on the grid (segment: probability; image: clipped to [0, 1]); slices not listed stay 0."""
    out = torch.zeros_like(target)
    t, o = target.movedim(axis, 0), out.movedim(axis, 0)  # (S, a, b) views
    ci, co = c_in.movedim(axis + 1, 1), c_out.movedim(axis + 1, 1)  # (N, S, a, b)
    channels = int(getattr(model, "in_channels", 3))
    for start in range(0, len(slices), batch):
        idx = torch.as_tensor(slices[start:start + batch], device=target.device)
        k, n = len(idx), ci.shape[0]
        x = t.new_zeros((k, channels) + t.shape[1:])
        x[:, 0] = t[idx]
        xi = t.new_zeros((k, n, channels) + t.shape[1:])
        xi[:, :, 0] = ci[:, idx].transpose(0, 1)
        xo = co[:, idx].transpose(0, 1)[:, :, None].contiguous()
        xi, xo = bootstrap_context(xi, xo, size, generator=torch.Generator().manual_seed(seed))
        y = model(x, xi, xo)[:, 0]
        o[idx] = segment_probability(y) if segment else y.clamp(0.0, 1.0)
        tick((start + k) / len(slices))
    return out


def neuralize(target: Volume, contexts: Sequence[tuple[Volume, Volume]], *,
              model: torch.nn.Module | str | Path = "neuralizer_2d", task: str = "segment",
              label_value: int | None = None, plane: str = "axial", context_size: int | None = None,
              align: bool = True, device: str | torch.device = "auto", batch_slices: int = 8, seed: int = 0,
              progress: Progress | None = None, cancel: CancelToken | None = None,
              card: dict[str, Any] | None = None) -> NeuralizeResult:
    """Predict the task that `contexts` (image, output) pairs demonstrate on `target`; see the module docstring.

    `context_size`: size the set is bootstrapped to (default: the card's `neuralizer.max_context`; sets at least
    this large are used as given); `card`: the model card when `model` is a module."""
    from ..registration.device import resolve_device

    start = time.perf_counter()
    progress, tick = ticker(progress, cancel)

    if task not in TASKS:
        raise InputError(f"unknown task '{task}' (use segment or image)")
    if plane not in PLANE_AXIS:
        raise InputError(f"unknown plane '{plane}' (use axial, coronal or sagittal)")
    if label_value is not None and task != "segment":
        raise InputError("label_value (--label-value) only applies to segment tasks: it picks one label of the "
                         "context label maps")
    if not contexts:
        raise InputError("the context set is empty: give at least one (image, output) pair")
    if batch_slices < 1 or (context_size is not None and context_size < 1):
        raise InputError("batch_slices and context_size must be at least 1")
    dev = resolve_device(device)
    model, card = load_neuralizer(model, dev, card)
    settings = card.get("neuralizer", {})
    size = int(context_size or settings.get("max_context") or len(contexts))
    segment = task == "segment"
    target = _checked(target, "target image")
    nd = target.spatial_ndim
    pairs, paths = _checked_contexts(contexts, nd, segment, label_value)

    tick("prepare", 0.0, "resampling the target to the network grid")
    spacing = card_spacing({"input_domain": {"spacing_mm": settings.get("spacing_mm", 2.0)}}, nd)
    grid = network_grid(target, spacing, nd, multiple=int(getattr(model, "divisor", 1)))
    domain = {**card, "input_domain": {**card.get("input_domain", {}), "spacing_mm": spacing.tolist()}}
    warnings = domain_messages(target, domain, nd)
    t_img = _grid_tensor(_normalised(target)[0], grid, dev)
    inside = _grid_tensor(target.with_data(np.ones(target.data.shape, np.uint8)), grid, dev, mode="nearest") > 0.5
    net = _NetworkTarget(grid, t_img, inside)
    t_prep = time.perf_counter() - start

    c_in, c_out, bounds, per_context = [], [], [], []
    for i, (image, output) in enumerate(pairs, 1):
        span = (0.05 + 0.45 * (i - 1) / len(pairs), 0.05 + 0.45 * i / len(pairs))
        moved, moved_out, lo_hi, entry = _place_context(
            i, image, output, net, align=align, segment=segment, dev=dev, warnings=warnings,
            progress=progress.sub("align", *span))
        c_in.append(moved)
        c_out.append(moved_out)
        bounds.append(lo_hi)
        per_context.append({**paths[i - 1], **entry})
        tick("align", span[1], f"context {i}/{len(pairs)}")
    t_align = time.perf_counter() - start - t_prep
    if len(pairs) > settings.get("max_context", len(pairs)):
        warnings.append(f"{len(pairs)} contexts: more than the model was trained with ({settings['max_context']}); "
                        "memory and time grow linearly with the set")

    t_grid, ci, co = (t_img, torch.stack(c_in), torch.stack(c_out))
    axis = PLANE_AXIS[plane] if nd == 3 else 2
    if nd == 2:  # one slice: a singleton third axis
        t_grid, ci, co, inside3 = t_grid[..., None], ci[..., None], co[..., None], inside[..., None]
    else:
        inside3 = inside
    slices = torch.nonzero(inside3.movedim(axis, 0).flatten(1).any(1)).flatten().tolist()
    with torch.no_grad():
        y = _predict(model, t_grid, ci, co, axis, slices, size=size, seed=seed, batch=batch_slices,
                     segment=segment, tick=lambda f: tick("network", 0.5 + 0.45 * f, f"{len(slices)} {plane} slices"))
    y = y[..., 0] if nd == 2 else y
    t_net = time.perf_counter() - start - t_prep - t_align

    tick("outputs", 0.95, "mapping the prediction back to the target grid")
    native = resample_to(tensor_to_volume(y[None, None], grid), target, interpolation="linear", device=dev)
    values = np.asarray(native.data, np.float32)
    probability = None
    if segment:
        probability = Volume(values, target.affine.copy())
        prediction = Volume((values >= 0.5).astype(np.uint8), target.affine.copy(), is_label=True)
        units = None
    else:
        lo, hi = (float(np.mean([b[k] for b in bounds])) for k in (0, 1))
        prediction = Volume((lo + values * (hi - lo)).astype(np.float32), target.affine.copy())
        units = {"lo": lo, "hi": hi, "mapping": "lo + y * (hi - lo), y clipped to [0, 1]; lo, hi = mean 0.5/99.5 "
                 "percentiles of the context outputs"}
    total = time.perf_counter() - start
    report = {
        "task": task, "label_value": label_value, "plane": plane if nd == 3 else "native 2D",
        "n_contexts": len(pairs), "context_size": max(size, len(pairs)), "bootstrapped": len(pairs) < size,
        "align": align, "seed": seed, "device": str(dev), "contexts": per_context, "warnings": warnings,
        "output_units": units,
        "model": {"name": card.get("name"), "sha256": card.get("sha256"), "architecture": card.get("architecture")},
        "network_grid": {"shape": list(grid.grid_shape), "spacing_mm": np.round(grid.spacing, 6).tolist(),
                         "affine": np.round(grid.affine, 6).tolist()},
        "align_settings": ({"similarity": ALIGN_SETTINGS.similarity, "levels": list(ALIGN_SETTINGS.affine_levels),
                            "iterations": list(ALIGN_SETTINGS.affine_iterations)} if align else None),
        "timings": {"prepare": round(t_prep, 4), "align": round(t_align, 4), "network": round(t_net, 4),
                    "outputs": round(total - t_prep - t_align - t_net, 4), "neuralize_seconds": round(total, 4)},
        "metrics": _metrics(prediction, segment),
    }
    return NeuralizeResult(prediction=prediction, probability=probability, report=report)


def _metrics(prediction: Volume, segment: bool) -> dict[str, Any]:
    """Segment: foreground size (mL in 3D, mm² in 2D); image: intensity range."""
    data = np.asarray(prediction.data)
    if not segment:
        return {"min": float(data.min()), "max": float(data.max()), "mean": float(data.mean())}
    nd = prediction.spatial_ndim
    voxel = float(np.prod(prediction.spacing[:nd]))
    key, scale = ("volume_ml", 1e-3) if nd == 3 else ("area_mm2", 1.0)
    return {"voxels": int(data.sum()), key: round(float(data.sum()) * voxel * scale, 4)}
