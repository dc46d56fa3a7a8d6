"""Neuralizer training episodes and fixed benchmark episodes from the Neuralizer cache (2D slices).

An episode (Czolbe & Dalca 2023, Sec. 3.2 and Supplement G) is one task shown as a target pair plus N context
pairs. Here every sample of a batch is its own episode with its own task; all samples of one call share a plane
(axial = `data[:, :, k]`, coronal = `data[:, j, :]`, sagittal = `data[i, :, :]` of the canonical RAS grid, so a
slice is indexed in the remaining axes' order). Members are random draws of the training subjects (other subjects
than the target's when there are several) at the target's slice position ± 1, each with its own spatial
(affine ∘ elastic) and intensity augmentation; all maps of a member are warped together by one `grid_sample` into
a crop window centred near the brain, so augmentation costs 2D work only. Task parameters and task
augmentations are drawn once per episode (`tasks.build_example`).

Held out by default (never in training episodes): the protocols `HELD_OUT_PROTOCOLS` and tasks `HELD_OUT_TASKS`;
Colin27 (the benchmark's target subject) is not a training subject unless asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..training.dataset_cache import GRID_SPACING
from ..training.synth import RandomFields
from ..transforms.sampling import sample
from .augment import DataAugConfig, TaskAugConfig, member_coords
from .data_cache import NEURALIZER_CACHE, PROTOCOLS, SUBJECTS, load_neuralizer_cache
from .tasks import HELD_OUT_PROTOCOLS, HELD_OUT_TASKS, SEGMENT, TASKS, Members, TaskConfig, build_example

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # the grid axis a plane's slices are taken along
FLOAT_MAPS = ("image", "head_image", "brain_dist", "head_dist")


def _subset(name: str, given: Sequence[str] | None, known: Sequence[str], default: Sequence[str]) -> list[str]:
    out = list(default if given is None else given)
    unknown = [v for v in out if v not in known]
    if unknown or not out:
        raise ValueError(f"{name} must be a non-empty subset of {', '.join(known)}; got {out}")
    return out


class NeuralizerData:
    """`episode(batch, n_context)` for training, `fixed_episode(task, ...)` for the benchmark; `state()` /
    `set_state()` for exact resume. `config` = {"task": TaskConfig, "task_augment": TaskAugConfig,
    "data_augment": DataAugConfig, "min_brain_area": float} as dicts."""

    def __init__(self, cache: dict | str | Path = NEURALIZER_CACHE, *, subjects: Sequence[str] = ("mni152",),
                 tasks: Sequence[str] | None = None, protocols: Sequence[str] | None = None, crop: int | None = 64,
                 planes: Sequence[str] = ("axial", "coronal", "sagittal"), seed: int = 0,
                 device: str | torch.device = "cpu", config: dict | None = None):
        self.cache_path = None if isinstance(cache, dict) else str(cache)
        data = cache if isinstance(cache, dict) else load_neuralizer_cache(cache)
        cfg = dict(config or {})
        self.task_config = TaskConfig.from_dict(cfg.get("task"))
        self.task_aug = TaskAugConfig.from_dict(cfg.get("task_augment"))
        self.data_aug = DataAugConfig.from_dict(cfg.get("data_augment"))
        self.min_brain_area = float(cfg.get("min_brain_area", 0.3))
        self.meta = data.get("meta") or {}
        self.subject_names = [s for s in SUBJECTS if f"{s}_image" in data]
        listed = list((self.meta.get("protocols") or {}).keys()) or list(PROTOCOLS)
        self.all_protocols = ("tissue", *(p for p in listed if p != "tissue"
                                          and all(f"{s}_{p}" in data for s in self.subject_names)))
        self.subjects = _subset("subjects", subjects, self.subject_names, ())
        self.tasks = _subset("tasks", tasks, list(TASKS), [t for t in TASKS if t not in HELD_OUT_TASKS])
        self.protocols = _subset("protocols", protocols, self.all_protocols,
                                 [p for p in self.all_protocols if p not in HELD_OUT_PROTOCOLS])
        self.planes = _subset("planes", planes, list(PLANES), ())
        self.crop = None if crop is None else int(crop)
        self.rng = RandomFields(seed, device)
        self.voxel_mm = float(abs(np.asarray(data.get("grid_affine", np.eye(4) * GRID_SPACING))[0, 0])) or 2.0
        self._stack(data)

    # --- arrays ---------------------------------------------------------------------------------------------
    def _stack(self, data: dict) -> None:
        dev = self.rng.device
        zeros = np.zeros(data[f"{self.subject_names[0]}_image"].shape, np.float32)
        floats, ints = [], []
        for s in self.subject_names:
            floats.append(np.stack([np.asarray(data.get(f"{s}_{k}", zeros), np.float32) for k in FLOAT_MAPS]))
            ints.append(np.stack([np.asarray(data[f"{s}_{p}"]).astype(np.int16) for p in self.all_protocols]))
        self.floats = torch.as_tensor(np.stack(floats)).to(dev)   # (S, 4, X, Y, Z)
        self.ints = torch.as_tensor(np.stack(ints)).to(dev)       # (S, P, X, Y, Z), channel 0 = tissue
        self.has_head = torch.tensor([f"{s}_head_image" in data for s in self.subject_names], device=dev)
        self._by_plane: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        brain = self.ints[:, 0] > 0
        self.valid: dict[str, list[torch.Tensor]] = {}
        for plane, axis in PLANES.items():
            area = brain.float().sum(dim=[d for d in (1, 2, 3) if d != axis + 1])  # (S, n_slices)
            self.valid[plane] = [torch.nonzero(a >= self.min_brain_area * a.max())[:, 0] for a in area]

    def _plane(self, plane: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-plane contiguous copies (S, K, C, H, W) of the volumes: a slice is then one memcpy, not a strided
        gather (10 ms per episode on one CPU thread)."""
        if plane not in self._by_plane:
            axis = PLANES[plane] + 2
            self._by_plane[plane] = (self.floats.movedim(axis, 1).contiguous(),
                                     self.ints.movedim(axis, 1).contiguous())
        return self._by_plane[plane]

    def slice_shape(self, plane: str) -> tuple[int, int]:
        shape = list(self.floats.shape[2:])
        del shape[PLANES[plane]]
        return int(shape[0]), int(shape[1])

    def _members(self, plane: str, subject: list[int], k: list[int], centres: torch.Tensor, out_shape,
                 augment: torch.Tensor, rng: RandomFields) -> Members:
        """All members of the call, warped into their windows (one grid_sample per interpolation kind)."""
        dev = rng.device
        s_t, k_t = torch.tensor(subject, device=dev), torch.tensor(k, device=dev)
        floats, ints = self._plane(plane)
        f, i = floats[s_t, k_t], ints[s_t, k_t].float()
        coords = member_coords(rng, out_shape, centres, self.data_aug, augment)
        images = sample(f[:, :2], coords, mode="linear")                       # zeros outside: background
        dists = sample(f[:, 2:], coords, mode="linear", padding="border")     # distances continue outward
        labels = sample(i, coords, mode="nearest").round().long()
        return Members(image=images[:, :1], head_image=images[:, 1:], brain_dist=dists[:, :1],
                       head_dist=dists[:, 1:], tissue=labels[:, :1], labels=labels, protocols=self.all_protocols,
                       has_head=self.has_head[s_t], jitter=augment, voxel_mm=self.voxel_mm)

    def _centre(self, plane: str, subject: int, k: int, out_shape, rng: RandomFields) -> list[float]:
        """A random brain pixel of the slice, moved so that the window stays inside the slice."""
        brain = torch.nonzero(self._plane(plane)[1][subject, k, 0] > 0)
        shape = self.slice_shape(plane)
        c = brain[int(rng.scalar(0.0, len(brain) - 1e-6))].tolist() if len(brain) else [(n - 1) / 2 for n in shape]
        return [min(max(float(c[a]), (out_shape[a] - 1) / 2), shape[a] - 1 - (out_shape[a] - 1) / 2)
                if shape[a] >= out_shape[a] else (shape[a] - 1) / 2 for a in range(2)]

    @staticmethod
    def _pick(rng: RandomFields, items: Sequence) -> Any:
        return items[int(rng.scalar(0.0, len(items) - 1e-6))]

    # --- episodes -------------------------------------------------------------------------------------------
    def episode(self, batch: int, n_context: int) -> dict[str, Any]:
        """A training batch: every sample its own task (see the module docstring)."""
        if batch < 1 or n_context < 1:
            raise ValueError("batch and n_context must be ≥ 1")
        r, m = self.rng, n_context + 1
        plane = self._pick(r, self.planes)
        out_shape = (self.crop, self.crop) if self.crop else self.slice_shape(plane)
        idx = {s: self.subject_names.index(s) for s in self.subjects}
        tasks, subjects, ks, centres = [], [], [], []
        for _ in range(batch):
            tasks.append(self._pick(r, self.tasks))
            target = self._pick(r, self.subjects)
            others = [s for s in self.subjects if s != target] or [target]
            members = [idx[target]] + [idx[self._pick(r, others)] for _ in range(n_context)]
            valid = self.valid[plane][idx[target]]
            k = int(valid[int(r.randint(0, len(valid), ()))])
            n_k = self.floats.shape[2 + PLANES[plane]]
            ks += [k] + [min(max(k + int(r.randint(-1, 2, ())), 0), n_k - 1) for _ in range(n_context)]
            centres += [self._centre(plane, idx[target], k, out_shape, r)] * m
            subjects += members
        all_aug = torch.ones(batch * m, dtype=torch.bool, device=r.device)
        mem = self._members(plane, subjects, ks, torch.tensor(centres, device=r.device), out_shape, all_aug, r)
        examples = []
        for b in range(batch):
            part = _part(mem, slice(b * m, (b + 1) * m))
            x, y, p = build_example(tasks[b], part, r, task_config=self.task_config, task_aug=self.task_aug,
                                    data_aug=self.data_aug, allowed_protocols=self.protocols)
            p.update(plane=plane, slice=ks[b * m],
                     subjects=[self.subject_names[s] for s in subjects[b * m:(b + 1) * m]])
            examples.append((x, y, p))
        return _assemble(examples, plane)

    def fixed_episode(self, task: str, *, protocol: str | None = None, labels: Sequence[int] | None = None,
                      subject: str = "colin27", context_subject: str = "mni152", n_context: int = 8,
                      plane: str = "axial", slice_index: int | None = None, seed: int = 0,
                      **options: Any) -> dict[str, Any]:
        """One benchmark episode (B = 1, full slice, no task augmentation): the target is `subject`'s slice
        as it is (no augmentation), the context `n_context` draws of `context_subject` at the slice ± 1 with data
        augmentation. Segment: `protocol` (any, held-out ones included; default random) and `labels` (default
        1–3 present in the target slice). `options` fix other task parameters (e.g. sigma=0.1, factor=3.0,
        direction="to_t1"). Seeded by `seed` only; the training stream is untouched."""
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
        for name, value in (("subject", subject), ("context_subject", context_subject)):
            if value not in self.subject_names:
                raise ValueError(f"{name} must be one of {', '.join(self.subject_names)}, got '{value}'")
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {', '.join(PLANES)}, got '{plane}'")
        r, m = RandomFields(seed, self.rng.device), n_context + 1
        st, sc = self.subject_names.index(subject), self.subject_names.index(context_subject)
        n_k = self.floats.shape[2 + PLANES[plane]]
        valid = self.valid[plane][st]
        k = int(valid[int(r.randint(0, len(valid), ()))]) if slice_index is None else int(slice_index)
        if not 0 <= k < n_k:
            raise ValueError(f"slice_index {k} outside 0..{n_k - 1} for plane {plane}")
        ks = [k] + [min(max(k + int(r.randint(-1, 2, ())), 0), n_k - 1) for _ in range(n_context)]
        shape = self.slice_shape(plane)
        centres = torch.tensor([[(n - 1) / 2 for n in shape]] * m, device=r.device)
        augment = torch.arange(m, device=r.device) > 0
        mem = self._members(plane, [st] + [sc] * n_context, ks, centres, shape, augment, r)
        if task != "segment" and (protocol is not None or labels is not None):
            raise ValueError("protocol and labels apply to the segment task only")
        opts = dict(options, protocol=protocol, labels=labels) if task == "segment" else dict(options)
        x, y, p = build_example(task, mem, r, task_config=self.task_config, task_aug=self.task_aug,
                                data_aug=self.data_aug, allowed_protocols=self.all_protocols, task_augment=False,
                                options=opts)
        p.update(plane=plane, slice=k, subjects=[subject] + [context_subject] * n_context, seed=seed)
        return _assemble([(x, y, p)], plane)

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def state(self) -> torch.Tensor:
        return self.rng.state()

    def set_state(self, state: torch.Tensor) -> None:
        self.rng.set_state(state)

    def describe(self) -> dict[str, Any]:
        """What the model card says about the training data (JSON-able)."""
        prot = self.meta.get("protocols", {})
        return {
            "cache": self.cache_path, "cache_format": self.meta.get("format"),
            "subjects": {"training": self.subjects, "available": self.subject_names,
                         "notes": self.meta.get("subjects")},
            "tasks": {t: {"kind": TASKS[t].kind, "description": TASKS[t].description} for t in self.tasks},
            "held_out_tasks": [t for t in TASKS if t not in self.tasks],
            "protocols": {p: {"labels": len(prot.get(p, {}).get("labels", {})),
                              "description": prot.get(p, {}).get("description"),
                              "file": prot.get(p, {}).get("file"), "licence": prot.get(p, {}).get("licence")}
                          for p in self.protocols},
            "held_out_protocols": [p for p in self.all_protocols if p not in self.protocols],
            "planes": self.planes, "crop": self.crop, "spacing_mm": self.voxel_mm, "in_channels": 3,
            "intensity": "percentile 0.5/99.5 per image (inputs and image outputs), masks 0/1",
            "task_config": self.task_config.to_dict(), "task_augment": self.task_aug.to_dict(),
            "data_augment": self.data_aug.to_dict(), "min_brain_area": self.min_brain_area,
            "sources": self.meta.get("sources", []),
        }


def _part(m: Members, idx: slice) -> Members:
    return Members(image=m.image[idx], tissue=m.tissue[idx], brain_dist=m.brain_dist[idx],
                   head_dist=m.head_dist[idx], head_image=m.head_image[idx], has_head=m.has_head[idx],
                   labels=m.labels[idx], protocols=m.protocols, jitter=m.jitter[idx], voxel_mm=m.voxel_mm)


def _assemble(examples: list[tuple[torch.Tensor, torch.Tensor, dict]], plane: str) -> dict[str, Any]:
    x = torch.stack([e[0] for e in examples]).clamp(0, 1)
    y = torch.stack([e[1] for e in examples]).clamp(0, 1)
    return {"target_in": x[:, 0].contiguous(), "target_out": y[:, 0].contiguous(),
            "context_in": x[:, 1:].contiguous(), "context_out": y[:, 1:].contiguous(),
            "is_segment": torch.tensor([TASKS[e[2]["task"]].kind == SEGMENT for e in examples],
                                       device=x.device),
            "task": [e[2]["task"] for e in examples], "plane": plane, "info": [e[2] for e in examples]}
