"""The Neuralizer data cache: two subjects, many segmentation protocols, ONE .npz on the template grid.

Neuralizer learns tasks from examples, so it needs many *tasks* more than many subjects. Offline and permissively
licensed we have two brains (MNI152 for training, Colin27 held out as the benchmark's targets) and several label
atlases drawn in MNI space (Debian mricron-data, BSD-3-clause per /usr/share/doc/mricron-data/copyright). Every
atlas is put on both subjects: each (subject, protocol) pair is a different segmentation protocol to learn from.

Contents (grid of `toporeg.training.dataset_cache`: 96 × 112 × 96, 2 mm, RAS), per subject `s` in
`mni152`, `colin27`:
  `{s}_image` float32 [0, 1] skull-stripped T1, `{s}_mask` uint8 brain, `{s}_tissue` uint8 (1 CSF, 2 GM, 3 WM;
  the `tissue` protocol), `{s}_brain_dist` / `{s}_head_dist` float16 mm (head synthesis, see
  `segmentation.head_synthesis`), `{s}_{protocol}` uint16 label map per atlas protocol (nearest neighbour by the
  atlas' affine, then cut to the subject's brain mask, so masks never label background);
  `colin27_head_image` float32 [0, 1] (the real whole head; MNI152 has none: heads are synthesised),
  `grid_affine`, `meta` (JSON: every source file with its sha256 and licence, label names, the fraction of each
  atlas' labelled voxels inside each brain mask).

Built from the template and segmentation caches (built first when missing) and the atlas folder; numpy, nibabel
and torch only.

    python -m toporeg.neuralizer.data_cache [--out .bench-cache/toporeg_neuralizer_2mm.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..segmentation.data_cache import SEG_CACHE, load_seg_cache
from ..training.dataset_cache import DEFAULT_CACHE, TEMPLATES, TISSUE_LABELS, load_cache, write_npz_cache

NEURALIZER_CACHE = Path(".bench-cache") / "toporeg_neuralizer_2mm.npz"
FORMAT = "toporeg-neuralizer-cache/1"
SUBJECTS = TEMPLATES  # ("mni152", "colin27"): training subject, held-out benchmark subject
MRICRON_DIR = Path("/usr/share/mricron/templates")
MRICRON_LICENCE = ("BSD-3-clause: Debian mricron-data (/usr/share/doc/mricron-data/copyright, 'Files: *', "
                   "Copyright 2006-2010 Chris Rorden)")
# protocol -> (file, label-name file or None, description). HarvardOxford (FSL non-commercial upstream licence)
# and inia19 (macaque) are deliberately absent.
ATLASES: dict[str, tuple[str, str | None, str]] = {
    "aal": ("aal.nii.gz", "aal.nii.txt", "AAL, 116 cortical/subcortical/cerebellar regions (Tzourio-Mazoyer 2002)"),
    "aicha": ("AICHAmc.nii.gz", "AICHAmc.nii.txt", "AICHA (Joliot 2015), 192 homotopic functional regions"),
    "jhu": ("JHU-WhiteMatter-labels-1mm.nii.gz", "JHU-WhiteMatter-labels-1mm.nii.txt",
            "JHU ICBM-DTI-81 white-matter tract labels (Mori 2008), 48 tracts"),
    "natbrainlab": ("natbrainlab.nii.gz", None, "NatBrainLab tractography atlas (Catani), 32 tracts"),
    "jhu189": ("jhu189.nii.gz", None, "JHU 189-region whole-brain parcellation (Faria 2012)"),
    "brodmann": ("brodmann.nii.gz", None, "Brodmann areas (as distributed with MRIcron), 41 areas"),
}
PROTOCOLS = ("tissue", *ATLASES)
# Header repairs, by file name. mricron's JHU copy keeps FSL's array (stored x = 90 − i, radiological) under a header
# saying x = −91 + i, which mirrors it: FSL's JHU-labels.xml puts label 45 "Uncinate fasciculus R" at voxel
# (55, 127, 54), i.e. +35 mm, where mricron's header puts it at −35 mm (and every "_R" tract on the left). FSL's
# own MNI152 1 mm sform is restored.
_FSL_1MM = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
AFFINE_FIXES: dict[str, tuple[np.ndarray, str]] = {
    "JHU-WhiteMatter-labels-1mm.nii.gz": (_FSL_1MM, "header mirrored L/R in mricron-data; FSL MNI152 1 mm sform "
                                                    "(x = 90 - i) restored, so '_R' tracts lie at x > 0"),
}
MIN_INSIDE = 0.9  # an atlas whose labels fall outside a brain more than this is not on it: refuse


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def label_names(path: Path | None, protocol: str, ids: np.ndarray) -> dict[str, str]:
    """Names from mricron's `index name [code]` text file; numbered names where the atlas ships none."""
    names: dict[str, str] = {}
    if path is not None and path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) > 0:
                names[parts[0]] = parts[1]
    prefix = "Brodmann area" if protocol == "brodmann" else "region"
    return {str(int(i)): names.get(str(int(i)), f"{prefix} {int(i)}") for i in ids if i > 0}


def atlas_on_grid(path: Path, grid_affine: np.ndarray, shape: tuple[int, ...],
                  affine: np.ndarray | None = None) -> np.ndarray:
    """The label atlas at `path` (MNI space; its own affine, or `affine` where its header is known to be wrong,
    see `AFFINE_FIXES`) on the grid, nearest neighbour, uint16."""
    import nibabel as nib

    from ..geometry import resample_to
    from ..io import Volume

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{path}: expected a 3D integer label map, got {data.ndim}D {data.dtype}")
    if affine is None:
        affine = AFFINE_FIXES[path.name][0] if path.name in AFFINE_FIXES else img.affine
    src = Volume(data.astype(np.float32), np.asarray(affine, np.float64), is_label=True)
    ref = Volume(np.zeros(tuple(shape), np.uint8), np.asarray(grid_affine, np.float64))
    out = np.asarray(resample_to(src, ref, interpolation="nearest").data).reshape(tuple(shape))
    return np.rint(out).astype(np.uint16)


def inside_fraction(labels: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the labelled voxels that lie inside the brain mask (≈ 1: the atlas sits on the brain)."""
    lab = labels > 0
    return float((lab & mask).sum() / max(int(lab.sum()), 1))


def _as_dict(cache: dict | str | Path, loader) -> dict:
    return cache if isinstance(cache, dict) else loader(cache)


def build_neuralizer_cache(out: str | Path = NEURALIZER_CACHE, *, template_cache: dict | str | Path = DEFAULT_CACHE,
                           seg_cache: dict | str | Path = SEG_CACHE, atlas_dir: str | Path = MRICRON_DIR,
                           atlases: dict[str, tuple[str, str | None, str]] | None = None,
                           licence: str = MRICRON_LICENCE, min_inside: float = MIN_INSIDE,
                           verbose: bool = True) -> Path:
    """Write the Neuralizer cache (see the module docstring). Missing template/segmentation cache files are built
    first. Raises when an atlas file is missing or does not land on the brains (`min_inside`)."""
    atlases = dict(ATLASES if atlases is None else atlases)
    if not isinstance(template_cache, dict) and not Path(template_cache).exists():
        from ..training.dataset_cache import build_cache
        build_cache(template_cache)
    if not isinstance(seg_cache, dict) and not Path(seg_cache).exists():
        if isinstance(template_cache, dict):
            raise FileNotFoundError(f"{seg_cache}: segmentation cache missing (build it from a template cache file)")
        from ..segmentation.data_cache import build_seg_cache
        build_seg_cache(seg_cache, template_cache=template_cache)
    cache = _as_dict(template_cache, load_cache)
    seg = _as_dict(seg_cache, load_seg_cache)
    affine = np.asarray(cache["grid_affine"], np.float64)
    shape = tuple(cache["mni152_mask"].shape)
    folder = Path(atlas_dir)

    arrays: dict[str, np.ndarray] = {"grid_affine": affine}
    for s in SUBJECTS:
        arrays[f"{s}_image"] = np.asarray(cache[f"{s}_image"], np.float32)
        arrays[f"{s}_mask"] = np.asarray(cache[f"{s}_mask"], np.uint8)
        arrays[f"{s}_tissue"] = np.asarray(cache[f"{s}_tissue"], np.uint8)
        for d in ("brain_dist", "head_dist"):
            arrays[f"{s}_{d}"] = np.asarray(seg[f"{s}_{d}"], np.float32).astype(np.float16)
    arrays["colin27_head_image"] = np.asarray(seg["colin27_head_image"], np.float32)

    protocols: dict[str, Any] = {"tissue": {
        "labels": {str(k): v for k, v in TISSUE_LABELS.items() if k > 0},
        "source": {s: (cache.get("meta") or {}).get("templates", {}).get(s, {}).get("tissue_source", "template cache")
                   for s in SUBJECTS},
        "description": "tissue classes of each subject's own T1 (one class per segment task)",
        "licence": (cache.get("meta") or {}).get("licence", "see the template cache")}}
    sources = []
    for name, (file, names_file, description) in atlases.items():
        path = folder / file
        if not path.exists():
            raise FileNotFoundError(f"{path}: atlas for protocol '{name}' missing (Debian package mricron-data, "
                                    "or pass atlas_dir)")
        labels = atlas_on_grid(path, affine, shape)
        inside = {}
        for s in SUBJECTS:
            mask = arrays[f"{s}_mask"] > 0
            inside[s] = round(inside_fraction(labels, mask), 4)
            if inside[s] < min_inside:
                raise ValueError(f"atlas '{name}' ({file}) does not land on {s}'s brain: only {inside[s]:.1%} of its "
                                 f"labelled voxels are inside the brain mask (< {min_inside:.0%})")
            arrays[f"{s}_{name}"] = (labels * mask).astype(np.uint16)
        if verbose:
            print(f"[neuralizer-cache] {name:12s} {len(np.unique(labels)) - 1:4d} labels, inside brain: "
                  + ", ".join(f"{s} {v:.3f}" for s, v in inside.items()), file=sys.stderr)
        names_path = folder / names_file if names_file else None
        digest = sha256(path)
        protocols[name] = {"file": file, "sha256": digest, "licence": licence, "description": description,
                           "labels": label_names(names_path, name, np.unique(labels)),
                           "inside_brain_fraction": inside}
        if file in AFFINE_FIXES:
            protocols[name]["affine_fix"] = AFFINE_FIXES[file][1]
        sources.append({"name": file, "sha256": digest, "licence": licence, "source": str(folder)})
        if names_path is not None and names_path.exists():
            sources.append({"name": names_file, "sha256": sha256(names_path), "licence": licence,
                            "source": str(folder)})

    meta = {
        "format": FORMAT,
        "grid": (cache.get("meta") or {}).get("grid"),
        "subjects": {"mni152": "ICBM 2009a nonlinear symmetric T1 (training subject; heads synthesised)",
                     "colin27": "Colin27 ch2 (held-out benchmark subject; real whole head)"},
        "protocols": protocols,
        "label_maps": "atlases resampled nearest-neighbour by their own affines (all MNI space), then cut to each "
                      "subject's brain mask",
        "sources": sources + list((cache.get("meta") or {}).get("sources", []))
                   + list((seg.get("meta") or {}).get("sources", [])),
        "template_cache": (cache.get("meta") or {}).get("format"),
        "template_licence": (cache.get("meta") or {}).get("licence"),
        "segmentation_cache": (seg.get("meta") or {}).get("format"),
        "builder": "toporeg.neuralizer.data_cache.build_neuralizer_cache",
    }
    return write_npz_cache(out, arrays, meta)


def load_neuralizer_cache(path: str | Path = NEURALIZER_CACHE) -> dict[str, Any]:
    """The cache as numpy arrays (float16 widened to float32) plus `meta` (a dict)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: Neuralizer cache missing; build it with "
                                f"`python -m toporeg.neuralizer.data_cache --out {path}`")
    data = load_cache(path)
    return {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float16 else v)
            for k, v in data.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(NEURALIZER_CACHE))
    p.add_argument("--template-cache", default=str(DEFAULT_CACHE))
    p.add_argument("--seg-cache", default=str(SEG_CACHE))
    p.add_argument("--atlas-dir", default=str(MRICRON_DIR))
    args = p.parse_args(argv)
    path = build_neuralizer_cache(args.out, template_cache=args.template_cache, seg_cache=args.seg_cache,
                                  atlas_dir=args.atlas_dir)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
