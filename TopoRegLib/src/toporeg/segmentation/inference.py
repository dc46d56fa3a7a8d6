"""Segmentation with uncertainty at inference: native image → network grid → samples → native grid.

1. The network grid has the image's canonical (closest RAS) axes, the card's spacing (2D models: in-plane only; the
   slices stay the image's own axial slices) and covers the whole field of view, padded to a multiple
   of 16. Intensities are percentile-normalised (0.5/99.5, clipped) as in training: 3D models over the native
   voxels (so the padding cannot shift the percentiles); 2D models, trained on individually normalised axial
   slices, per axial slice of the network grid over the voxels inside the image's field of view, with the
   training's own function (`percentile_normalise_torch`).
2. The model draws `samples` softmax samples (2D models: batches of axial slices; each batch re-seeds the same
   generator, so sample s uses the same dropout masks / latent noise in every slice); their mean is the prediction.
3. Mean and kept sample probabilities are resampled linearly onto the native grid; labels = argmax, entropy (bits)
   of the native mean, so the three output files agree voxel by voxel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..geometry import percentile_normalize, resample_to, tensor_to_volume, to_canonical, volume_to_tensor
from ..io import Volume, check_geometry, check_intensities, check_spatial_ndim, save_volume
from ..models.model_grid import PERCENTILES, foreground, model_grid, whole_head_warning
from ..progress import CancelToken, Progress, ticker
from .models import SegmentationModel
from .uncertainty import entropy, pairwise_distances

MAX_NETWORK_VOXELS = 256**3  # a 512 mm cube at 2 mm: beyond a head, and beyond a CPU's memory for a 3D U-Net
UNCERTAIN_BITS = 0.5         # report: volume whose entropy exceeds this
SAMPLE_FLOATS = 96_000_000   # per model call: as many samples as fit (a call recomputes the per-image parts)


@dataclass
class SegmentationResult:
    """Everything on the input's native grid; `summary()` is the report's metrics."""

    labels: Volume
    probabilities: Volume
    entropy: Volume
    samples: list[Volume]
    label_names: dict[int, str]
    n_samples: int
    sample_diversity: float
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Per-label size (mL in 3D, mm² in 2D), mean entropy inside each label and on its boundary, and totals."""
        from ..topology.synthetic import dilate

        nd = self.labels.spatial_ndim
        unit, scale = ("volume_ml", 1e-3) if nd == 3 else ("area_mm2", 1.0)
        voxel = float(np.prod(self.labels.spacing[:nd])) * scale
        lab = np.asarray(self.labels.data).reshape(self.labels.grid_shape)
        h = np.asarray(self.entropy.data, np.float64).reshape(lab.shape)
        t = torch.as_tensor(lab)[None, None]
        per_label = {}
        for value, name in sorted(self.label_names.items()):
            inside = lab == value
            if value == 0:
                continue
            m = t == value
            band = (dilate(m, 1) & dilate(~m, 1))[0, 0].numpy()  # voxels with both sides as neighbours
            per_label[str(value)] = {
                "name": name, unit: round(float(inside.sum()) * voxel, 4), "voxels": int(inside.sum()),
                "mean_entropy_bits": float(h[inside].mean()) if inside.any() else None,
                "boundary_mean_entropy_bits": float(h[band].mean()) if band.any() else None}
        near = dilate(t > 0, 1)[0, 0].numpy()
        return {"labels": per_label, "mean_entropy_bits": float(h.mean()),
                "mean_entropy_bits_near_labels": float(h[near].mean()) if near.any() else None,
                f"uncertain_{unit}": round(float((h > UNCERTAIN_BITS).sum()) * voxel, 4),
                "uncertain_threshold_bits": UNCERTAIN_BITS, "max_entropy_bits": float(np.log2(len(self.label_names))),
                "samples": self.n_samples, "sample_diversity": self.sample_diversity}

    def save(self, out_dir: str | Path, *, fmt: str = "nii") -> dict[str, str]:
        """Write labels (.nii.gz or .seg.nrrd), probabilities, entropy and samples/; returns name → relative path."""
        if fmt not in ("nii", "seg.nrrd"):
            raise InputError(f"unknown label format '{fmt}' (use nii or seg.nrrd)")
        out, ext = Path(out_dir), ".nii.gz" if fmt == "nii" else ".seg.nrrd"
        files = {"labels": f"labels{ext}", "probabilities": "probabilities.nii.gz", "entropy": "entropy.nii.gz"}
        save_volume(self.labels, out / files["labels"])
        save_volume(self.probabilities, out / files["probabilities"])
        save_volume(self.entropy, out / files["entropy"])
        for i, sample in enumerate(self.samples):
            files[f"sample_{i:02d}"] = f"samples/sample_{i:02d}{ext}"
            save_volume(sample, out / files[f"sample_{i:02d}"])
        return files


def card_spacing(card: dict[str, Any], ndim: int) -> np.ndarray:
    """The model's voxel size (mm) along its `ndim` axes; 2 mm when the card does not say."""
    value = card.get("input_domain", {}).get("spacing_mm", 2.0)
    spacing = np.broadcast_to(np.asarray(value, float), (ndim,)) if np.ndim(value) == 0 else np.asarray(value, float)
    if spacing.shape != (ndim,) or np.any(spacing <= 0):
        raise InputError(f"the model card's spacing_mm {value!r} does not fit a {ndim}D model")
    return spacing


def _canonical_frame(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axes 3x3, shape 3, spacing 3) of the image's grid reordered/flipped to be closest to R, A, S; a 2D image
    keeps its plane (its in-plane axes ordered and flipped like a learned-registration model grid's)."""
    if volume.spatial_ndim == 3:
        canon = to_canonical(Volume(np.zeros(volume.grid_shape, np.uint8), volume.affine))[0]
        return canon.direction, np.array(canon.spatial_shape, float), canon.spacing
    probe = {"input_domain": {"shape": [16, 16], "spacing_mm": [1.0, 1.0]}}
    axes = model_grid(volume, probe).direction
    perm = [int(np.argmax(np.abs(volume.direction[:, :2].T @ axes[:, a]))) for a in range(2)]
    return (axes, np.array([volume.grid_shape[p] for p in perm] + [1], float),
            np.array([volume.spacing[p] for p in perm] + [volume.spacing[2]]))


def network_grid(volume: Volume, spacing: Sequence[float], model_ndim: int, multiple: int = 16) -> Volume:
    """Zeros volume: canonical axes, `spacing` on the model's axes (native spacing on the others), covering the
    image's field of view from its first canonical voxel, padded to `multiple` on the model's axes (half before,
    half after), so that at the image's own spacing the grid points are the image's voxels (no interpolation)."""
    axes, shape, old = _canonical_frame(volume)
    nd = volume.spatial_ndim
    new = old.copy()
    new[:model_ndim] = spacing
    model_axes = np.arange(3) < model_ndim
    n_fov = np.where(model_axes, np.ceil((shape - 1) * old / new - 1e-6) + 1, shape)
    n = np.where(model_axes, np.ceil(n_fov / multiple) * multiple, n_fov).astype(int)
    before = (n - n_fov.astype(int)) // 2
    centre = volume.voxel_to_ras(np.concatenate([(np.array(volume.grid_shape) - 1) / 2.0, np.zeros(3 - nd)]))
    affine = np.eye(4)
    affine[:3, :3] = axes * new
    affine[:3, 3] = centre - axes @ ((shape - 1) * old / 2.0) - affine[:3, :3] @ before
    grid_shape = tuple(int(v) for v in n[:nd])
    if int(np.prod(grid_shape)) > MAX_NETWORK_VOXELS:
        fov = " x ".join(f"{v:.0f}" for v in (shape[:nd] - 1) * old[:nd])
        raise InputError(f"the image's field of view ({fov} mm) needs a {'x'.join(map(str, grid_shape))} network "
                         f"grid at {', '.join(f'{s:g}' for s in spacing)} mm ({np.prod(grid_shape) / 1e6:.0f} M "
                         f"voxels, more than the {MAX_NETWORK_VOXELS / 1e6:.0f} M supported); crop it to the head",
                         volume.meta.get("path"))
    return Volume(np.zeros(grid_shape, np.uint8), affine)


def domain_messages(volume: Volume, card: dict[str, Any], model_ndim: int) -> list[str]:
    """Warnings when the image looks outside the card's input domain (skull, voxel size, field of view)."""
    nd, msgs = volume.spatial_ndim, []
    fg = foreground(volume)
    if not fg.any():
        return ["the image has no foreground above 10 % of its intensity range: the segmentation may be empty"]
    voxel = volume.spacing[:nd]
    extent = (np.argwhere(fg).max(0) - np.argwhere(fg).min(0) + 1) * voxel
    if nd == 3:
        head = whole_head_warning(fg, voxel, card, "use a whole-head model or strip the skull")
        msgs += [head] if head else []
        if np.any(extent > 350):
            msgs.append(f"the foreground ({' x '.join(f'{e:.0f}' for e in extent)} mm) is larger than a head: the "
                        "models were trained on head and brain images")
    want = card_spacing(card, model_ndim)
    if np.any(voxel[:model_ndim] > 1.5 * want):
        msgs.append(f"the image's voxels ({', '.join(f'{v:.3g}' for v in voxel[:model_ndim])} mm) are much coarser "
                    f"than the model's ({', '.join(f'{v:g}' for v in want)} mm): boundaries will be uncertain")
    return msgs


def _check_volume(volume: Volume, model: SegmentationModel) -> Volume:
    """A single-channel, finite, non-constant 2D/3D image that the model's dimensionality can segment."""
    volume = check_image(volume)
    if model.ndim == 3 and volume.spatial_ndim == 2:
        raise InputError("this is a 3D segmentation model but the image is 2D (give a volume or a 2D model)",
                         volume.meta.get("path"))
    return volume


def check_image(volume: Volume) -> Volume:
    """A single-channel, finite, non-constant 2D/3D image (a trailing channel axis of length 1 is dropped)."""
    path = volume.meta.get("path")
    if volume.has_channels:
        if volume.n_channels != 1:
            raise InputError(f"expected a single-channel image, got {volume.n_channels} channels or time points "
                             f"(shape {volume.data.shape})", path)
        volume = Volume(volume.data[..., 0], volume.affine, is_label=volume.is_label, meta=dict(volume.meta))
    check_spatial_ndim(volume, (2, 3), path)
    check_geometry(volume, path)
    check_intensities(volume, path)
    return volume


def _load(model, device: torch.device, card: dict[str, Any] | None) -> tuple[SegmentationModel, dict[str, Any]]:
    if not isinstance(model, torch.nn.Module):
        from ..models.catalogue import resolve_model
        from ..models.weights import load_model

        path = resolve_model(model)
        model, card = load_model(path, device=device)
        if not isinstance(model, SegmentationModel):
            raise InputError(f"not a segmentation model (architecture {type(model).__name__})", path)
    elif not isinstance(model, SegmentationModel):
        raise InputError(f"not a segmentation model ({type(model).__name__})")
    return model.to(device).eval(), dict(card or getattr(model, "card", None) or {})


def normalise_slices(x: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """2D models' input: (1, 1, X, Y[, Z]) resampled raw intensities → each axial slice percentile-normalised on
    its own, exactly as a training slice (`percentile_normalise_torch`), the percentiles taken over `inside`
    (same shape, bool: the image's field of view on the network grid)."""
    from ..training.templates import percentile_normalise_torch

    if x.dim() == 4:
        return percentile_normalise_torch(x, mask=inside)
    slices = percentile_normalise_torch(x[0].permute(3, 0, 1, 2), mask=inside[0].permute(3, 0, 1, 2))
    return slices.permute(1, 2, 3, 0)[None].contiguous()


def _sample(model: SegmentationModel, x: torch.Tensor, n: int, keep: int, seed: int, batch_slices: int,
            tick) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """(mean (1, C, *G), the first kept distinct samples' probabilities (CPU), distinct masks (m, *G) uint8, order).

    Only the model's m distinct samples are computed: sample i is distinct sample order[i] = i mod m (the plain
    U-Net's one softmax, the ensemble's members); the mean weights each by how often it recurs among the n."""
    m = min(n, model.distinct_samples or n)
    weights = torch.tensor([len(range(j, n, m)) / n for j in range(m)], device=x.device)
    slicewise = model.ndim == 2 and x.dim() == 5
    grid = tuple(x.shape[2:])
    mean = torch.zeros((model.n_classes,) + grid, device=x.device)
    kept = torch.zeros((min(keep, m), model.n_classes) + grid)
    masks = torch.zeros((m,) + grid, dtype=torch.uint8)
    starts = range(0, grid[-1], batch_slices) if slicewise else [0]
    voxels = int(np.prod(grid[:-1])) * min(batch_slices, grid[-1]) if slicewise else int(np.prod(grid))
    chunk = max(1, min(m, SAMPLE_FLOATS // (voxels * model.n_classes)))
    steps, done = len(starts) * -(-m // chunk), 0
    for z0 in starts:
        z1 = min(z0 + batch_slices, grid[-1])
        region = (Ellipsis, slice(z0, z1)) if slicewise else (Ellipsis,)
        xb = x[0, :, :, :, z0:z1].permute(3, 0, 1, 2) if slicewise else x  # a batch of axial slices (K, 1, X, Y)
        g = torch.Generator(device=x.device).manual_seed(seed)
        for s0 in range(0, m, chunk):
            p = model.sample_probabilities(xb, min(chunk, m - s0), g, start=s0)  # (k, K|1, C, *S)
            k = p.shape[0]
            # reduce (weighted mean, argmax) on the network's contiguous layout, permute only the results:
            # an argmax over a permuted (strided) class axis was a third of the fast benchmark's time
            avg = torch.einsum("k,k...->...", weights[s0:s0 + k], p)                  # (K|1, C, *S)
            labels = p.argmax(2).to(torch.uint8)                                     # (k, K|1, *S)
            if slicewise:
                mean[region] += avg.permute(1, 2, 3, 0)                              # (C, X, Y, K)
                masks[s0:s0 + k][region] = labels.permute(0, 2, 3, 1).cpu()           # (k, X, Y, K)
            else:
                mean[region] += avg[0]
                masks[s0:s0 + k][region] = labels[:, 0].cpu()
            for i in range(s0, min(s0 + k, kept.shape[0])):
                kept[i][region] = (p[i - s0].permute(1, 2, 3, 0) if slicewise else p[i - s0, 0]).cpu()
            done += 1
            tick(done / steps)
    return mean[None], kept, masks, [i % m for i in range(n)]


def _to_native(probs: torch.Tensor, grid: Volume, volume: Volume, device) -> np.ndarray:
    """(1, C, *G) probabilities → (*native, C) on the native grid, linear, renormalised to sum to 1."""
    native = np.asarray(resample_to(tensor_to_volume(probs, grid), volume, interpolation="linear", device=device).data,
                        np.float32)
    total = native.sum(-1, keepdims=True)
    native = np.where(total > 0, native / np.where(total > 0, total, 1), 0).astype(np.float32)
    native[..., 0][total[..., 0] == 0] = 1.0  # (never expected: the grid covers the image) call it background
    return native


def segment(volume: Volume, model: SegmentationModel | str | Path, *, samples: int = 16,
            device: str | torch.device = "cpu", progress: Progress | None = None, cancel: CancelToken | None = None,
            card: dict[str, Any] | None = None, keep_samples: int | None = None, seed: int = 0,
            batch_slices: int = 16) -> SegmentationResult:
    """Segment `volume` with a model (module, bundled name or .safetensors path); outputs on its native grid.

    `samples`: Monte-Carlo samples averaged (the plain U-Net's are identical); `keep_samples`: how many sampled
    label maps to return (default: all); `card`: the model card when `model` is a module (its spacing, labels).
    """
    from ..registration.device import resolve_device

    start = time.perf_counter()
    progress, tick = ticker(progress, cancel)

    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    keep = samples if keep_samples is None else int(keep_samples)
    if not 0 <= keep <= samples:
        raise InputError(f"can keep between 0 and {samples} sampled masks, not {keep}")
    dev = resolve_device(device)
    model, card = _load(model, dev, card)
    volume = _check_volume(volume, model)
    tick("prepare", 0.0, "resampling to the model's grid")
    grid = network_grid(volume, card_spacing(card, model.ndim), model.ndim)
    messages = domain_messages(volume, card, model.ndim)
    if model.ndim == 2:  # per axial slice, as the 2D models were trained
        raw = np.asarray(volume.data, np.float32)
        x = volume_to_tensor(resample_to(volume.with_data(raw), grid, interpolation="linear", device=dev), device=dev)
        inside = volume_to_tensor(resample_to(volume.with_data(np.ones_like(raw)), grid, interpolation="nearest",
                                              device=dev), device=dev) > 0.5
        x = normalise_slices(x, inside)
    else:
        data = percentile_normalize(np.asarray(volume.data, np.float32), *PERCENTILES)
        x = volume_to_tensor(resample_to(volume.with_data(data), grid, interpolation="linear", device=dev),
                             device=dev)
    t_prep = time.perf_counter() - start

    names = {int(k): str(v) for k, v in card.get("labels", {}).items()} or {c: f"label_{c}" for c in
                                                                           range(model.n_classes)}
    with torch.no_grad():
        mean, kept, masks, order = _sample(model, x, samples, keep, seed, batch_slices,
                                    lambda f: tick("network", 0.05 + 0.8 * f, f"{model.method}: {samples} samples"))
    t_net = time.perf_counter() - start - t_prep
    tick("outputs", 0.85, "mapping probabilities back to the image grid")
    probs = _to_native(mean, grid, volume, dev)
    label_dtype = np.uint8 if model.n_classes <= 256 else np.int16
    segments = [{"name": names.get(c, f"label_{c}"), "label": c, "color": None} for c in range(1, model.n_classes)]

    def label_volume(p: np.ndarray) -> Volume:
        return Volume(p.argmax(-1).astype(label_dtype), volume.affine.copy(), is_label=True,
                      meta={"segments": segments})

    distinct: dict[int, Volume] = {}
    for i, j in enumerate(order[:keep]):
        if j not in distinct:
            distinct[j] = label_volume(_to_native(kept[j][None], grid, volume, dev))
        tick("outputs", 0.85 + 0.14 * (i + 1) / keep, "sampled masks")
    sample_vols = [distinct[j] for j in order[:keep]]
    diversity = 0.0
    if samples > 1:
        d = pairwise_distances(masks, masks, model.n_classes)[order][:, order]
        diversity = float(d.sum() / (samples * (samples - 1)))
    total = time.perf_counter() - start
    return SegmentationResult(
        labels=label_volume(probs),
        probabilities=Volume(probs, volume.affine.copy(), has_channels=True),
        entropy=Volume(entropy(probs, dim=-1).astype(np.float32), volume.affine.copy()),
        samples=sample_vols, label_names={c: names.get(c, f"label_{c}") for c in range(model.n_classes)},
        n_samples=samples, sample_diversity=diversity, messages=messages,
        timings={"prepare": round(t_prep, 4), "network": round(t_net, 4),
                 "outputs": round(total - t_prep - t_net, 4), "segmentation_seconds": round(total, 4)},
        settings={"model": card.get("name"), "model_sha256": card.get("sha256"), "method": model.method,
                  "task": card.get("task"), "ndim": model.ndim, "samples": samples, "seed": seed,
                  "device": str(dev), "network_grid": {"shape": list(grid.grid_shape),
                                                       "spacing_mm": np.round(grid.spacing, 6).tolist(),
                                                       "affine": np.round(grid.affine, 6).tolist()},
                  "converged": card.get("converged")})
