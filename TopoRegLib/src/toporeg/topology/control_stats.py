"""Control-set statistics for the outlier score Q, computed once and reused for a whole cohort.

Q(J) = E_{I∈C}[L_sym(J|I) − E_{K∈C\\{I}}[L_sym(I|K)]∘Φ_{J→I}] (Czolbe et al. 2021, Eq. 7) needs the leave-one-out
control baselines, O(|C|²) pair fits. The per-pair pipeline refits them on every FIXED image's grid; here the
controls are registered affinely to one reference (atlas) image, the baselines are fitted once on the reference's
work grid, and each scored image is brought onto that grid, scored against the stored baselines and mapped back
onto its own grid. The mean of the baseline maps on the reference grid is the "mean control heatmap" (the
paper's Fig. 5: where topology varies among healthy controls).

Files: `control_stats.safetensors` (tensors; never pickles) and `control_stats.json` (settings and the tensor
file's sha256, verified on load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..io import Volume
from ..io.atomic import atomic_path
from ..models.model_grid import model_grid
from ..progress import Progress
from ..registration.device import resolve_device
from .pipeline import PairFitterFactory, TopologySettings
from .prior import PriorParameters
from .score import ControlBaselines, control_set_baselines, outlier_score
from .work_grid import affine_onto_grid, to_target_grid

TENSORS_FILE = "control_stats.safetensors"
METADATA_FILE = "control_stats.json"
FORMAT = "toporeg-control-statistics"
FORMAT_VERSION = 1


@dataclass
class ControlStatistics:
    """Everything Q needs from the control set, on the reference's work grid (tensors on the CPU)."""

    reference: Volume                 # the reference/atlas image: Q's common space, mean heatmap's grid
    grid: Volume                      # the work grid: the reference grid (optimize) or the model's grid (learned)
    controls: torch.Tensor            # (n, *S) controls affinely registered to the reference, on the work grid
    baselines: ControlBaselines       # leave-one-out E_K[L_sym(I|K)] per control (+ shared Σ_f, α, β), nats
    settings: TopologySettings        # the settings that produced them (Q must use the same ones)
    control_names: list[str] = field(default_factory=list)
    _fitters: dict[str, PairFitterFactory] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_controls(self) -> int:
        return int(self.controls.shape[0])

    def mean_heatmap(self) -> Volume:
        """Mean control heatmap E_{I,K}[L_sym(I|K)] on the reference grid, nats per voxel."""
        mean = torch.stack(list(self.baselines.maps)).mean(0)
        return Volume(to_target_grid(mean, self.grid, self.reference), self.reference.affine)

    def fitter(self, dev: torch.device) -> PairFitterFactory:
        """The pair fitter of the stored settings on the work grid, built once per device (models load once)."""
        key = str(dev)
        if key not in self._fitters:
            factory = PairFitterFactory(self.settings, self.grid.affine, dev)
            factory.grid_affine = self.grid.affine
            self._fitters[key] = factory
        return self._fitters[key]

    def check_settings(self, settings: TopologySettings) -> list[str]:
        """Refuse a run whose nats would not be comparable with the stored baselines (method, features, model);
        return notes for harmless differences (the stored fit budget is what Q uses)."""
        mine, theirs = _identity(self.settings), _identity(settings)
        diff = [f"{k} {mine[k]!r} (run: {theirs[k]!r})" for k in mine if mine[k] != theirs[k]]
        if diff:
            raise InputError("the control statistics were computed with other topology settings: "
                             + ", ".join(diff) + "; recompute them with `toporeg controls` and this run's settings")
        budget = [(k, getattr(self.settings, k), getattr(settings, k)) for k in ("preset", "iterations")]
        return [f"the outlier score uses the control statistics' {k} {a!r}, not this run's {b!r}"
                for k, a, b in budget if a != b]

    def summary(self) -> dict[str, Any]:
        mean = np.asarray(self.mean_heatmap().data, np.float64)
        shared = self.baselines.shared
        return {"n_controls": self.n_controls, "controls": self.control_names,
                "work_grid_shape": list(self.grid.grid_shape), "reference_grid_shape": list(self.reference.grid_shape),
                "mean_control_heatmap_nats": {"median": float(np.median(mean)), "p99": float(np.percentile(mean, 99)),
                                              "max": float(mean.max())},
                "prior": shared[1].as_dict() if shared else None, "settings": vars(self.settings).copy()}

    # --- files -----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> dict[str, str]:
        """Write the tensors (safetensors) and then the metadata with their sha256 into `folder`."""
        from safetensors.torch import save_file

        from ..models.weights import sha256_file

        folder = Path(folder)
        tensors = {"reference": torch.as_tensor(np.asarray(self.reference.data, np.float32)),
                   "reference_affine": torch.as_tensor(self.reference.affine, dtype=torch.float64),
                   "grid_affine": torch.as_tensor(self.grid.affine, dtype=torch.float64),
                   "controls": self.controls.detach().cpu().float(),
                   "baselines": torch.stack([m.detach().cpu().float() for m in self.baselines.maps])}
        if self.baselines.shared is not None:
            tensors["sigma2"] = self.baselines.shared[0].detach().cpu().float()
        with atomic_path(folder / TENSORS_FILE) as tmp:
            save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(tmp))  # no shared memory
        shared = self.baselines.shared
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "toporeg_version": __version__,
                "tensors": TENSORS_FILE, "sha256": sha256_file(folder / TENSORS_FILE),
                "settings": vars(self.settings).copy(), "identity": _identity(self.settings),
                "grid_shape": list(self.grid.spatial_shape), "n_controls": self.n_controls,
                "control_names": self.control_names, "prior": shared[1].as_dict() if shared else None,
                "units": "baselines: nats per voxel (leave-one-out mean L_sym among the controls), work grid"}
        with atomic_path(folder / METADATA_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return {"tensors": TENSORS_FILE, "metadata": METADATA_FILE}

    @classmethod
    def load(cls, folder: str | Path) -> "ControlStatistics":
        """Read statistics written by `save` (a folder, or either of its two files); refuses a tensor file whose
        sha256 differs from the one recorded in the metadata."""
        from safetensors.torch import load_file

        from ..models.weights import sha256_file

        folder = Path(folder)
        folder = folder.parent if folder.is_file() else folder
        meta_path = folder / METADATA_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no control statistics here ({METADATA_FILE} is missing; write them with "
                             "`toporeg controls`)", folder) from None
        except ValueError as exc:
            raise InputError(f"control statistics metadata is not valid JSON ({exc})", meta_path) from None
        if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"not TopoReg control statistics of format version ≤ {FORMAT_VERSION}", meta_path)
        tensor_path = folder / str(meta.get("tensors", TENSORS_FILE))
        if not tensor_path.exists():
            raise InputError("control statistics tensor file is missing", tensor_path)
        digest = sha256_file(tensor_path)
        if digest != meta.get("sha256"):
            raise InputError(f"control statistics do not match the checksum in {METADATA_FILE} (sha256 "
                             f"{digest[:12]}… ≠ {str(meta.get('sha256'))[:12]}…): refusing a modified or "
                             "corrupted file", tensor_path)
        t = load_file(str(tensor_path))
        known = {f.name for f in fields(TopologySettings)}
        settings = TopologySettings(**{k: v for k, v in meta["settings"].items() if k in known})
        grid = Volume(np.zeros(tuple(meta["grid_shape"]), np.uint8), t["grid_affine"].numpy())
        shared = None
        if meta.get("prior") is not None and "sigma2" in t:
            shared = (t["sigma2"], PriorParameters(float(meta["prior"]["alpha"]), float(meta["prior"]["beta"])))
        controls, maps = t["controls"], t["baselines"]
        if controls.shape != maps.shape or tuple(controls.shape[1:]) != grid.grid_shape:
            raise InputError(f"control statistics are inconsistent (controls {tuple(controls.shape)}, baselines "
                             f"{tuple(maps.shape)}, work grid {grid.grid_shape})", tensor_path)
        return cls(reference=Volume(t["reference"].numpy(), t["reference_affine"].numpy()), grid=grid,
                   controls=controls, baselines=ControlBaselines(list(maps.unbind(0)), shared), settings=settings,
                   control_names=list(meta.get("control_names", [])))


def _identity(settings: TopologySettings) -> dict[str, str | None]:
    """What makes two runs' nats comparable: method, features and the trained weights actually used (by sha256,
    so a model found under another path on another machine still matches)."""
    out: dict[str, str | None] = {"method": settings.method, "features": settings.features, "model": None}
    if settings.method == "learned":
        out["model"] = _weights_id(settings.model)
    elif settings.features == "semantic":
        out["model"] = _weights_id(settings.deepsim_model)
    return out


def _weights_id(path: str | None) -> str | None:
    if not path:
        return None
    from ..models.weights import read_card
    try:
        return str(read_card(path).get("sha256") or path)
    except (InputError, OSError):
        return str(path)


def compute_control_statistics(controls: Sequence[Volume], settings: TopologySettings | None = None, *,
                               reference: Volume | None = None, progress: Progress | None = None,
                               device: str | torch.device = "auto") -> ControlStatistics:
    """Register every control affinely to `reference` (default: the first control), put them on the work grid
    and fit the leave-one-out baselines once (O(|C|²) pair fits)."""
    settings = settings or TopologySettings()
    progress = progress or Progress()
    if len(controls) < 2:
        raise InputError(f"the outlier score needs at least two control images (got {len(controls)})")
    reference = controls[0] if reference is None else reference
    dev = resolve_device(device)
    factory = PairFitterFactory(settings, reference.affine, dev)
    # the work grid: the reference grid (optimize) or the trained model's grid (learned), as in the pipeline
    grid = reference if factory.model is None else model_grid(reference, factory.card)
    factory.grid_affine = grid.affine
    on_grid = []
    for k, control in enumerate(controls):
        sub = progress.sub("controls", 0.2 * k / len(controls), 0.2 * (k + 1) / len(controls))
        on_grid.append(affine_onto_grid(control, reference, grid, settings.preset, dev, progress=sub,
                                        names=("control image", "the reference"))[0])
    baselines = control_set_baselines(on_grid, factory, progress=progress.sub("controls", 0.2, 1.0))
    shared = None if baselines.shared is None else (baselines.shared[0].detach().cpu(), baselines.shared[1])
    ref = Volume(np.asarray(reference.data, np.float32), reference.affine)
    stats = ControlStatistics(
        reference=ref, grid=grid if grid is not reference else ref,
        controls=torch.cat([c.detach().cpu() for c in on_grid])[:, 0],
        baselines=ControlBaselines([m.detach().cpu() for m in baselines.maps], shared), settings=settings,
        control_names=[str(c.meta.get("path", f"control {k}")) for k, c in enumerate(controls)])
    stats._fitters[str(dev)] = factory
    return stats


def outlier_from_statistics(fixed: Volume, stats: ControlStatistics, *, fixed_mask: Volume | None = None,
                            progress: Progress | None = None, device: str | torch.device = "auto") -> Volume:
    """Q(FIXED) against stored control statistics (no baseline refits), on FIXED's own grid, nats per voxel.

    FIXED is registered affinely to the reference and resampled onto the work grid; Q is computed there and
    brought back through the inverse of that affine, so it lands where the change is in FIXED's space (0 where
    FIXED extends beyond the reference's field of view)."""
    progress = progress or Progress()
    dev = resolve_device(device)
    j, to_fixed = affine_onto_grid(fixed, stats.reference, stats.grid, stats.settings.preset, dev, mask=fixed_mask,
                                   progress=progress.sub("outlier", 0.0, 0.1), names=("the image", "the reference"))
    shared = stats.baselines.shared
    baselines = ControlBaselines([m.to(dev) for m in stats.baselines.maps],
                                 None if shared is None else (shared[0].to(dev), shared[1]))
    controls = [c[None, None].to(dev) for c in stats.controls]
    q, _ = outlier_score(j, controls, stats.fitter(dev), control_baselines=baselines,
                         progress=progress.sub("outlier", 0.1, 1.0))
    return Volume(to_target_grid(q, stats.grid, fixed, transform=np.linalg.inv(to_fixed)), fixed.affine)
