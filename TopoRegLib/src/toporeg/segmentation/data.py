"""Training and evaluation draws for the segmentation tasks: brain mask, tissue classes, ambiguous structure.

Tasks (targets are 0 outside the brain in all of them):
  brain      0 background, 1 brain (the template's brain mask)
  tissue     0 background, 1 CSF, 2 GM, 3 WM (CSF = brain mask − GM − WM, as in the template cache)
  ambiguous  0 background, 1 structure (default: white matter, from the ICBM 2009a probability map / Colin27's
             partial-volume fraction; see `data_cache.py`), K simulated annotators (`annotators.py`)

Each draw picks a template (MNI152 / Colin27 minus `hold_out`), an axial slice (2D) or the volume (3D) and an
appearance: skull-stripped, or a whole head, either with the brain's real T1 intensities inside a synthetic head
("hybrid"), the template's real head (Colin27 only), or fully synthetic label-to-image (`head_synthesis.py`).
The geometry then goes through `TemplateAugmenter`'s random affine ∘ elastic warp (image linear, labels nearest,
atlas probability linear, so annotators are thresholded in output space), followed by blur, resolution change,
gamma, bias field, noise and the inference-time percentile normalisation. 2D ambiguous draws are then cut to
64 × 64 patches, mostly around the structure (foreground oversampling). Everything is seeded (one
`RandomFields`), so a seed reproduces a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config_dict import DictConfig
from ..training.dataset_cache import DEFAULT_CACHE, GRID_SPACING, TEMPLATES, TISSUE_LABELS, load_cache
from ..training.templates import TemplateAugmenter
from ..transforms.sampling import sample
from .annotators import AnnotatorConfig, annotator_masks
from .data_cache import SEG_CACHE, load_seg_cache
from .head_synthesis import HeadConfig, IntensityConfig, degrade, head_labels, label_image

TASKS = ("brain", "tissue", "ambiguous")


def task_labels(task: str, structure: str = "white matter") -> dict[int, str]:
    """Label names of a task (what the model card's `labels` says)."""
    if task == "brain":
        return {0: "background", 1: "brain"}
    if task == "tissue":
        return dict(TISSUE_LABELS)
    if task == "ambiguous":
        return {0: "background", 1: structure}
    raise ValueError(f"unknown segmentation task '{task}' (known: {', '.join(TASKS)})")


@dataclass
class SegDataConfig(DictConfig):
    whole_head: float = 0.5        # probability of a whole-head image (else skull-stripped)
    synthetic: float = 0.35        # probability of full label-to-image synthesis (else real brain intensities)
    real_head: float = 0.5         # whole head, real intensities, template has a real head: use it (else hybrid)
    outside_slices: float = 0.1    # 2D: probability of any axial slice (neck, vertex: often no brain at all)
    structure_slices: float = 0.7  # 2D ambiguous: probability of a slice through the structure
    ambiguous_crop: list | None = field(default_factory=lambda: [64, 64])  # 2D ambiguous: training patch (or None)
    crop_focus: float = 0.8        # probability that the patch is centred near the structure
    head: dict = field(default_factory=dict)          # HeadConfig
    intensity: dict = field(default_factory=dict)     # IntensityConfig
    annotators: dict = field(default_factory=dict)    # AnnotatorConfig
    noncommercial_atlas: bool = False  # allow a non-permissive ambiguous atlas (Harvard-Oxford): never for shipping

    @classmethod
    def from_dict(cls, d: dict | None) -> "SegDataConfig":
        """As DictConfig's, but lists stay lists (`ambiguous_crop` is one)."""
        return cls(**dict(d or {}))


def training_templates(hold_out: str | None) -> list[str]:
    if hold_out is not None and hold_out not in TEMPLATES:
        raise ValueError(f"hold_out must be one of {', '.join(TEMPLATES)} or None, got '{hold_out}'")
    return [t for t in TEMPLATES if t != hold_out]


class SegmentationData:
    """`sample(batch)` → dict(image (B, 1, *S) in [0, 1], target (B, *S) int64, brain (B, *S) bool, whole_head
    (B,) bool, template (list of names), slice (B,) or None; ambiguous: annotators (B, K, *S) int64).

    For the ambiguous task `target` is one annotator per sample (random, or `annotator=`); every model's
    `training_loss` also accepts the whole `annotators` tensor and picks itself."""

    def __init__(self, task: str, *, cache: dict | str | Path = DEFAULT_CACHE,
                 seg_cache: dict | str | Path = SEG_CACHE, ndim: int = 2, seed: int = 0,
                 device: str | torch.device = "cpu", augment: dict | None = None, data: dict | None = None,
                 hold_out: str | None = None, templates: Sequence[str] | None = None):
        task_labels(task)
        self.task, self.ndim = task, ndim
        cache = load_cache(cache) if isinstance(cache, (str, Path)) else cache
        seg = load_seg_cache(seg_cache) if isinstance(seg_cache, (str, Path)) else seg_cache
        self.config = SegDataConfig.from_dict(data)
        self.head_config = HeadConfig.from_dict(self.config.head)
        self.intensity_config = IntensityConfig.from_dict(self.config.intensity)
        self.annotator_config = AnnotatorConfig.from_dict(self.config.annotators)
        self.augmenter = TemplateAugmenter(cache, ndim=ndim, seed=seed, device=device, config=augment)
        self.rng = self.augmenter.rng
        self.templates = list(templates) if templates is not None else training_templates(hold_out)
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown or not self.templates:
            raise ValueError(f"templates must be a non-empty subset of {TEMPLATES}, got {self.templates}")
        self.hold_out = hold_out
        self.atlas = dict((seg.get("meta") or {}).get("atlas") or {})
        if task == "ambiguous":
            per_template = all(f"{t}_atlas_prob" in seg for t in self.templates)
            if not per_template and "atlas_prob" not in seg:
                raise FileNotFoundError("the segmentation cache has no probability map for the ambiguous task: "
                                        "rebuild it with `python -m toporeg.segmentation.data_cache`")
            if not self.atlas.get("permissive", False) and not self.config.noncommercial_atlas:
                raise ValueError(f"the segmentation cache's ambiguous atlas ({self.atlas.get('atlas', 'unknown')}: "
                                 f"{self.atlas.get('licence', 'licence unknown')}) is not permissively licensed; "
                                 "rebuild the cache with the default `--ambiguous icbm_wm`, or set "
                                 "data.noncommercial_atlas = true for a model that will not be shipped")
        self.structure = self.atlas.get("name", "structure")
        self.labels = task_labels(task, self.structure)
        self._stack(cache, seg)

    # --- arrays -------------------------------------------------------------------------------------------
    def _stack(self, cache: dict, seg: dict) -> None:
        dev = self.rng.device

        def stack(key: str, dtype=torch.float32) -> torch.Tensor:
            arrs = [np.asarray(key(t) if callable(key) else seg.get(key.format(t=t), cache.get(key.format(t=t))))
                    for t in self.templates]
            return torch.as_tensor(np.stack(arrs)[:, None]).to(dev, dtype)

        self.image = stack("{t}_image")
        self.tissue = stack("{t}_tissue", torch.int64)
        self.brain_dist = stack("{t}_brain_dist")
        self.head_dist = stack("{t}_head_dist")
        zeros = np.zeros(cache["mni152_image"].shape, np.float32)
        self.head_image = stack(lambda t: seg.get(f"{t}_head_image", zeros))
        self.has_head = torch.tensor([f"{t}_head_image" in seg for t in self.templates], device=dev)
        if all(f"{t}_atlas_prob" in seg for t in self.templates):  # per template (default: ICBM WM / Colin27 PV)
            self.prob = stack("{t}_atlas_prob")
        else:                                                     # one map shared by the templates (Harvard-Oxford)
            prob = seg.get("atlas_prob")
            self.prob = None if prob is None else torch.as_tensor(np.asarray(prob, np.float32))[None, None].to(dev)
        self.shape = tuple(self.image.shape[2:2 + self.ndim])
        brain_k = (self.tissue > 0).flatten(1, 3).any(1)  # (T, K): slices containing brain
        self.brain_slices = [torch.nonzero(b)[:, 0] for b in brain_k]
        if self.prob is not None:
            k = torch.nonzero((self.prob[:, 0] > 0.5).flatten(0, 2).any(0))[:, 0]
            self.structure_slices = k
        self.n_classes = len(self.labels)

    # --- drawing ------------------------------------------------------------------------------------------
    def _slices(self, template: torch.Tensor) -> torch.Tensor:
        c, r = self.config, self.rng
        n_k = self.image.shape[-1]
        out = []
        for t in template.tolist():
            u = r.scalar(0.0, 1.0)
            if u < c.outside_slices:
                pool = torch.arange(n_k, device=self.rng.device)
            elif self.task == "ambiguous" and u < c.outside_slices + c.structure_slices:
                pool = self.structure_slices
            else:
                pool = self.brain_slices[t]
            out.append(pool[int(r.randint(0, len(pool), ()))])
        return torch.stack(out)

    def _pick(self, volume: torch.Tensor, template: torch.Tensor, slices: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, *S) of each draw's template (a shared volume has a leading 1), gathering only the slices."""
        t = template if volume.shape[0] > 1 else torch.zeros_like(template)
        return volume[t] if slices is None else volume[t, :, :, :, slices]

    def _appearance(self, batch: int, whole_head: bool | None, synthetic: bool | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, r = self.config, self.rng
        head = r.uniform(0, 1, (batch,)) < c.whole_head if whole_head is None else torch.full(
            (batch,), bool(whole_head), device=r.device)
        synth = r.uniform(0, 1, (batch,)) < c.synthetic if synthetic is None else torch.full(
            (batch,), bool(synthetic), device=r.device)
        return head, synth

    def sample(self, batch: int = 1, *, whole_head: bool | None = None, synthetic: bool | None = None,
               real_head: bool | None = None, annotator: int | None = None) -> dict[str, Any]:
        """One batch of augmented draws; the keyword arguments force an appearance (evaluation sets)."""
        r, nd = self.rng, self.ndim
        template = r.randint(0, len(self.templates), (batch,))
        slices = self._slices(template) if nd == 2 else None
        tissue = self._pick(self.tissue, template, slices)
        brain_dist = self._pick(self.brain_dist, template, slices)
        labels = head_labels(tissue, brain_dist, self._pick(self.head_dist, template, slices), r, self.head_config,
                             GRID_SPACING)
        head, synth = self._appearance(batch, whole_head, synthetic)
        view = (batch,) + (1,) * (nd + 1)
        labels = torch.where(head.view(view), labels, torch.where(tissue > 0, labels, torch.zeros_like(labels)))
        brain = tissue > 0
        real = self._pick(self.image, template, slices) * brain
        img = label_image(labels, r, self.intensity_config, keep=real, keep_mask=brain & ~synth.view(view))
        img = torch.where(head.view(view) | brain, img, torch.zeros_like(img))  # stripped: exact zeros outside
        use_real = head & ~synth & self.has_head[template]
        use_real &= (r.uniform(0, 1, (batch,)) < self.config.real_head) if real_head is None else bool(real_head)
        img = torch.where(use_real.view(view), self._pick(self.head_image, template, slices), img)

        coords = self.augmenter.coordinates(batch)
        img = sample(img, coords, mode="linear")
        tissue = sample(tissue.float(), coords, mode="nearest").round().long()
        img = self.augmenter.intensity(degrade(img, r, self.intensity_config))
        out: dict[str, Any] = {"image": img, "brain": tissue[:, 0] > 0, "whole_head": head,
                               "template": [self.templates[t] for t in template.tolist()],
                               "slice": slices}
        if self.task == "tissue":
            out["target"] = tissue[:, 0]
        elif self.task == "brain":
            out["target"] = (tissue[:, 0] > 0).long()
        else:
            prob = sample(self._pick(self.prob, template, slices), coords, mode="linear")
            masks = annotator_masks(prob, r, self.annotator_config) * out["brain"][:, None]
            pick = (r.randint(0, masks.shape[1], (batch,)) if annotator is None
                    else torch.full((batch,), annotator % masks.shape[1], device=r.device))
            out["annotators"] = masks
            out["target"] = masks[torch.arange(batch, device=masks.device), pick]
            if nd == 2 and self.config.ambiguous_crop:
                out = self._crop(out, masks.amax(1))
        return out

    def _crop(self, out: dict[str, Any], union: torch.Tensor) -> dict[str, Any]:
        """Patches (nnU-Net-style foreground oversampling): a structure of ~1 % of a slice drowns in plain
        cross-entropy; centred on a random structure voxel with probability `crop_focus`, else anywhere."""
        r, size = self.rng, [int(v) for v in self.config.ambiguous_crop]
        shape = tuple(union.shape[1:])
        starts = []
        for b in range(union.shape[0]):
            fg = torch.nonzero(union[b])
            if len(fg) and r.scalar(0.0, 1.0) < self.config.crop_focus:
                centre = fg[int(r.randint(0, len(fg), ()))]
                jitter = r.randint(-size[0] // 4, size[0] // 4 + 1, (2,))
                lo = [int(centre[a] + jitter[a]) - size[a] // 2 for a in range(2)]
            else:
                lo = [int(r.randint(0, shape[a] - size[a] + 1, ())) for a in range(2)]
            starts.append([min(max(lo[a], 0), shape[a] - size[a]) for a in range(2)])

        def cut(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[b, ..., i:i + size[0], j:j + size[1]] for b, (i, j) in enumerate(starts)])

        for key in ("image", "brain", "target", "annotators"):
            out[key] = cut(out[key])
        out["crop"] = starts
        return out

    def describe(self) -> dict[str, Any]:
        """What the model card says about the data."""
        return {"task": self.task, "labels": {str(k): v for k, v in self.labels.items()},
                "templates": self.templates, "hold_out": self.hold_out, "ndim": self.ndim,
                "config": self.config.to_dict(), "head": self.head_config.to_dict(),
                "intensity": self.intensity_config.to_dict(),
                "annotators": self.annotator_config.to_dict() if self.task == "ambiguous" else None,
                "atlas": self.atlas if self.task == "ambiguous" else None,
                "augment": self.augmenter.config.to_dict()}
