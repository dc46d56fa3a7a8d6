"""The Neuralizer task registry and how one episode's examples are made from its members' slices.

An episode is one task shown on M members (member 0 = the target, the rest its context), each a differently
augmented slice of a subject (`Members`). `build_example` draws the task's parameters once (which labels, which
noise level, which modality, which task augmentations) and applies them to every member, so that the context
defines the task; per-member differences are data augmentation only.

Tasks (`TASKS`; kind `segment` → binary mask output, `image` → image output in [0, 1]):
  segment           T1 → union of 1–3 labels of one protocol (atlas), or one tissue class
  skull_strip       whole head (MNI152: synthetic head around the real brain; Colin27: its real head) → brain mask
  denoise           image + Gaussian or Rician noise → image
  inpaint           [image with smooth random holes, hole mask] → image
  super_resolution  image averaged down ×2–×4 (one or both axes), linearly up → image
  bias_removal      image × strong smooth bias field → image
  modality_transfer synthetic modality (labels → random intensities) → T1, or T1 → synthetic modality
Every input image is percentile-normalised (0.5/99.5) as at inference; empty channels are zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..config_dict import DictConfig
from ..segmentation.head_synthesis import HeadConfig, IntensityConfig, head_labels, label_image
from ..training.synth import RandomFields
from ..training.templates import percentile_normalise_torch
from .augment import (DataAugConfig, IntensityMapping, SobelFilter, SyntheticModality, TaskAugConfig,
                      channel_augment, mask_augment, member_intensity)

SEGMENT, IMAGE = "segment", "image"
IN_CHANNELS = 3


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str            # "segment" | "image"
    description: str


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("segment", SEGMENT, "T1 → union of 1–3 labels of one protocol, or one tissue class"),
    TaskInfo("skull_strip", SEGMENT, "whole head → brain mask"),
    TaskInfo("denoise", IMAGE, "noisy (Gaussian/Rician) → clean"),
    TaskInfo("inpaint", IMAGE, "[image with random holes, hole mask] → image"),
    TaskInfo("super_resolution", IMAGE, "×2–×4 down/up-sampled → original"),
    TaskInfo("bias_removal", IMAGE, "× strong smooth bias field → original"),
    TaskInfo("modality_transfer", IMAGE, "synthetic modality → T1, or T1 → synthetic modality"),
)}
HELD_OUT_PROTOCOLS = ("brodmann",)
HELD_OUT_TASKS = ("bias_removal",)


@dataclass
class TaskConfig(DictConfig):
    """Ranges of the per-episode task parameters."""
    whole_head: float = 0.3                       # P(whole-head input) for every task but skull_strip (always)
    labels: tuple[int, int] = (1, 3)              # labels joined into one segmentation mask
    min_label_fraction: float = 0.005             # a label must cover this much of the target slice
    noise_std: tuple[float, float] = (0.03, 0.2)
    rician: float = 0.5
    sr_factor: tuple[float, float] = (2.0, 4.0)
    sr_one_axis: float = 0.3                      # P(coarse along one axis only: thick slices)
    hole_fraction: tuple[float, float] = (0.05, 0.3)
    hole_spacing: tuple[float, float] = (4.0, 12.0)
    bias_strength: tuple[float, float] = (0.3, 0.8)


@dataclass
class Members:
    """One episode's M slices after spatial augmentation (member 0 = target); (M, 1, H, W) unless noted."""
    image: torch.Tensor        # skull-stripped T1 in [0, 1]
    tissue: torch.Tensor       # int64, 0 outside the brain
    brain_dist: torch.Tensor   # mm
    head_dist: torch.Tensor    # mm, negative inside the head
    head_image: torch.Tensor   # real whole head (zeros where the subject has none)
    has_head: torch.Tensor     # (M,) bool
    labels: torch.Tensor       # (M, P, H, W) int64 protocol label maps
    protocols: tuple[str, ...]  # names of `labels`' channels
    jitter: torch.Tensor       # (M,) bool: apply per-member intensity augmentation
    voxel_mm: float = 2.0

    @property
    def brain(self) -> torch.Tensor:
        return self.tissue > 0


def choose_labels(labels: torch.Tensor, protocols: Sequence[str], allowed: Sequence[str], rng: RandomFields,
                  config: TaskConfig, protocol: str | None = None) -> tuple[str, list[int]]:
    """A protocol (uniformly among `allowed` ones with a large enough label in the target slice `labels`
    (P, H, W)) and 1–3 of its labels present there (one class for `tissue`)."""
    min_px = max(int(config.min_label_fraction * labels[0].numel()), 1)
    eligible: dict[str, list[int]] = {}
    for name in ([protocol] if protocol else allowed):
        counts = torch.bincount(labels[protocols.index(name)].flatten())
        ids = [i for i in torch.nonzero(counts >= min_px)[:, 0].tolist() if i > 0]
        if ids:
            eligible[name] = ids
    if not eligible and min_px > 1:  # tiny slice or sparse protocol: any label present will do
        return choose_labels(labels, protocols, allowed, rng, replace(config, min_label_fraction=0.0), protocol)
    if not eligible:
        raise ValueError(f"no label of {protocol or list(allowed)} is present in the target slice")
    names = sorted(eligible)
    name = names[int(rng.scalar(0.0, len(names) - 1e-6))]
    ids = eligible[name]
    k = 1 if name == "tissue" else min(int(rng.scalar(config.labels[0], config.labels[1] + 1 - 1e-6)), len(ids))
    pick = torch.randperm(len(ids), generator=rng.cpu_gen)[:k].tolist()
    return name, sorted(ids[i] for i in pick)


def _p(rng: RandomFields, p: float) -> bool:
    return rng.scalar(0.0, 1.0) < p


def draw_params(task: str, m: Members, rng: RandomFields, config: TaskConfig, aug: TaskAugConfig, *,
                allowed_protocols: Sequence[str], task_augment: bool, options: dict | None = None) -> dict[str, Any]:
    """The episode's task parameters (JSON-able); `options` fixes any of them."""
    o = dict(options or {})
    p: dict[str, Any] = {"task": task, "kind": TASKS[task].kind}
    p["head"] = bool(o.pop("head")) if "head" in o else (task == "skull_strip" or (task_augment
                                                                                    and _p(rng, config.whole_head)))
    synthetic_ok = task_augment and task != "modality_transfer"
    p["modality"] = o.pop("modality", "synthetic" if synthetic_ok and _p(rng, aug.synthetic) else "t1")
    intensity = None
    if task_augment and _p(rng, aug.intensity):
        sobel_ok = task != "modality_transfer"
        intensity = "SobelFilter" if sobel_ok and _p(rng, aug.sobel) else "IntensityMapping"
    p["intensity"] = o.pop("intensity", intensity)
    if task == "segment":
        protocol, labels = o.pop("protocol", None), o.pop("labels", None)
        if protocol is not None and protocol not in m.protocols:
            raise ValueError(f"unknown protocol '{protocol}' (known: {', '.join(m.protocols)})")
        if labels is not None:
            if protocol is None:
                raise ValueError("labels need their protocol")
            p["protocol"], p["labels"] = protocol, sorted(int(v) for v in labels)
        else:
            p["protocol"], p["labels"] = choose_labels(m.labels[0], m.protocols, allowed_protocols, rng, config,
                                                       protocol)
    elif task == "denoise":
        p["sigma"], p["rician"] = rng.scalar(*config.noise_std), _p(rng, config.rician)
    elif task == "inpaint":
        p["fraction"], p["spacing"] = rng.scalar(*config.hole_fraction), rng.scalar(*config.hole_spacing)
    elif task == "super_resolution":
        p["factor"] = rng.scalar(*config.sr_factor)
        p["axis"] = int(rng.scalar(0.0, 2.0 - 1e-6)) if _p(rng, config.sr_one_axis) else None
    elif task == "bias_removal":
        p["strength"] = rng.scalar(*config.bias_strength)
    elif task == "modality_transfer":
        p["direction"] = "to_t1" if _p(rng, 0.5) else "from_t1"
    if task_augment and TASKS[task].kind == SEGMENT:
        probs = aug.extra_channels
        u, n = rng.scalar(0.0, sum(probs)), 1
        while n < len(probs) and u >= sum(probs[:n]):
            n += 1
        p["channels"] = n
    p.update(o)
    return p


def _scene(m: Members, head: bool, rng: RandomFields) -> torch.Tensor:
    """The label map the appearance is rendered from: tissue inside the brain, and a random synthetic head."""
    if head:
        return head_labels(m.tissue, m.brain_dist, m.head_dist, rng, HeadConfig(), m.voxel_mm)
    return m.tissue


def render(m: Members, scene: torch.Tensor, modality: str, intensity: str | None, head: bool, rng: RandomFields,
           data_aug: DataAugConfig, jitter: bool = True) -> torch.Tensor:
    """(M, 1, H, W) clean image in [0, 1]: T1 (real brain; real head where the subject has one, else a synthetic
    head) or a synthetic modality (one look-up table for the episode), an optional episode-wide intensity
    augmentation, per-member gamma/bias/noise, then percentile normalisation."""
    brain = m.brain
    if modality == "synthetic":
        img = SyntheticModality()(scene, rng)
        img = img if head else img * brain
    else:
        t1 = m.image * brain
        if head:
            hybrid = label_image(scene, rng, IntensityConfig(), keep=t1, keep_mask=brain)
            img = torch.where(m.has_head.view(-1, 1, 1, 1), m.head_image, hybrid)
        else:
            img = t1
    img = img / img.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1)  # [0, 1] for the maps below
    if intensity == "IntensityMapping":
        img = IntensityMapping()(img, rng)
    elif intensity == "SobelFilter":
        img = SobelFilter()(img)
    if jitter:
        img = member_intensity(img, rng, data_aug, m.jitter)
    return percentile_normalise_torch(img)


def _holes(rng: RandomFields, shape: tuple[int, ...], fraction: float, spacing: float) -> torch.Tensor:
    """Perlin-like hole mask: two octaves of smooth noise, thresholded at each member's (1 − fraction) quantile."""
    n, _, h, w = shape
    noise = rng.smooth_noise(n, 1, (h, w), spacing) + 0.5 * rng.smooth_noise(n, 1, (h, w), spacing / 2)
    q = torch.quantile(noise.flatten(1), 1.0 - fraction, dim=1).view(n, 1, 1, 1)
    return (noise > q).float()


def _corrupt(task: str, clean: torch.Tensor, p: dict[str, Any], rng: RandomFields) -> torch.Tensor:
    """The image-task input channels (M, C, H, W) from the clean image."""
    n, _, h, w = clean.shape
    if task == "denoise":
        noisy = clean + p["sigma"] * rng.randn(clean.shape)
        if p["rician"]:
            noisy = torch.sqrt(noisy ** 2 + (p["sigma"] * rng.randn(clean.shape)) ** 2)
        return percentile_normalise_torch(noisy)
    if task == "inpaint":
        holes = _holes(rng, tuple(clean.shape), p["fraction"], p["spacing"])
        return torch.cat([clean * (1 - holes), holes], 1)
    if task == "super_resolution":
        f = [p["factor"] if p["axis"] in (None, a) else 1.0 for a in (0, 1)]
        small = F.adaptive_avg_pool2d(clean, (max(round(h / f[0]), 2), max(round(w / f[1]), 2)))
        return percentile_normalise_torch(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
    if task == "bias_removal":
        field = torch.exp(p["strength"] * rng.smooth_noise(n, 1, (h, w), max(h, w) / 3.0))
        return percentile_normalise_torch(clean * field)
    raise ValueError(f"unknown image task '{task}'")


def build_example(task: str, m: Members, rng: RandomFields, *, task_config: TaskConfig, task_aug: TaskAugConfig,
                  data_aug: DataAugConfig, allowed_protocols: Sequence[str], task_augment: bool = True,
                  options: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(x (M, 3, H, W), y (M, 1, H, W), params) for one episode of `task` on the members `m`."""
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    p = draw_params(task, m, rng, task_config, task_aug, allowed_protocols=allowed_protocols,
                    task_augment=task_augment, options=options)
    scene = _scene(m, p["head"], rng)
    look = dict(scene=scene, head=p["head"], rng=rng, data_aug=data_aug)
    augs = [p["intensity"]] if p["intensity"] else []
    if task == "modality_transfer":
        to_t1 = p["direction"] == "to_t1"  # the intensity augmentation and the data augmentation go to the input
        t1 = render(m, modality="t1", intensity=None if to_t1 else p["intensity"], jitter=not to_t1, **look)
        synth = render(m, modality="synthetic", intensity=p["intensity"] if to_t1 else None, jitter=to_t1, **look)
        x, y = (synth, t1) if to_t1 else (t1, synth)
    else:
        clean = render(m, modality=p["modality"], intensity=p["intensity"], **look)
        if TASKS[task].kind == SEGMENT:
            if task == "skull_strip":
                y = m.brain.float()
            else:
                channel = m.labels[:, m.protocols.index(p["protocol"])][:, None]
                y = torch.isin(channel, torch.tensor(p["labels"], device=channel.device)).float()
            extra = [render(m, modality="synthetic" if _p(rng, 0.5) else "t1", intensity="IntensityMapping",
                            **look) for _ in range(p.get("channels", 1) - 1)]
            x = torch.cat([clean, *extra], 1)
            if task_augment:
                y, names = mask_augment(y, rng, task_aug)
                augs += names
        else:
            x, y = _corrupt(task, clean, p, rng), clean
    if p["modality"] == "synthetic" and task != "modality_transfer":
        augs.insert(0, "SyntheticModality")
    x = F.pad(x, (0, 0, 0, 0, 0, IN_CHANNELS - x.shape[1]))
    if task_augment:
        x, names = channel_augment(x, rng, task_aug)
        augs += names
    p["augmentations"] = augs
    return x, y, p
