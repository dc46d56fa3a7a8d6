"""Precompute the bundled templates on the network grid into ONE .npz, so training needs only numpy + torch.

Network grid (3D models; 2D models use its axial slices): canonical RAS, 2 mm isotropic, 96 × 112 × 96 voxels
(divisible by 16), voxel (0, 0, 0) at RAS (−96, −128, −90) mm, i.e. x −96…94, y −128…94, z −90…100 mm. It holds
the MNI152/Colin27 brains (x ±72, y −106…73, z −72…83 mm) with ≥ 16 mm margins, and its points coincide with
both templates' 2 mm grids (even mm), so resampling them is exact (no interpolation blur).

Contents (per template `mni152`, `colin27`): `{name}_image` float32 [0, 1] skull-stripped T1 (percentile
0.5/99.5 normalisation over the grid, as at inference), `{name}_tissue` uint8 (0 bg, 1 CSF, 2 GM, 3 WM),
`{name}_mask` uint8; `colin27_aal` uint8 (AAL 1..116); `grid_affine`; `meta` (JSON: sources, licences,
processing, label names). Colin27's tissue labels are *derived* here (3-class k-means of the T1 intensity inside
its brain mask); MNI152's come from the ICBM 2009a probability maps.

    python -m toporeg.training.dataset_cache --out .bench-cache/toporeg_templates_2mm.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

GRID_SHAPE = (96, 112, 96)
GRID_SPACING = 2.0
GRID_ORIGIN = (-96.0, -128.0, -90.0)
INTENSITY_PERCENTILES = (0.5, 99.5)
TISSUE_LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
DEFAULT_CACHE = Path(".bench-cache") / "toporeg_templates_2mm.npz"
TEMPLATES = ("mni152", "colin27")


def grid_affine(spacing: float = GRID_SPACING, origin=GRID_ORIGIN) -> np.ndarray:
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def _kmeans_tissue(image: np.ndarray, mask: np.ndarray, iterations: int = 50) -> np.ndarray:
    """1/2/3 = CSF/GM/WM by 1D k-means (dark → bright) of T1 intensities inside the mask."""
    values = image[mask]
    centres = np.percentile(values, [10, 50, 90]).astype(np.float64)
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centres[None]).argmin(1)
        new = np.array([values[assign == k].mean() if np.any(assign == k) else centres[k] for k in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    out = np.zeros(image.shape, np.uint8)
    out[mask] = (np.abs(values[:, None] - centres[None]).argmin(1) + 1).astype(np.uint8)
    return out


def build_cache(out: str | Path = DEFAULT_CACHE, *, shape=GRID_SHAPE, spacing: float = GRID_SPACING,
                origin=GRID_ORIGIN, sample_dir: str | Path | None = None) -> Path:
    """Resample, skull-strip and normalise the bundled templates onto the network grid; write one .npz."""
    from ..data.resources import sample_data_dir
    from ..geometry import percentile_normalize, resample_to
    from ..io import Volume, load_volume

    src = Path(sample_dir) if sample_dir else sample_data_dir()
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    files = {f["name"]: f for f in manifest["files"]}
    ref = Volume(np.zeros(tuple(shape), np.uint8), grid_affine(spacing, origin))

    def load(name: str, label: bool) -> np.ndarray:
        vol = load_volume(src / f"{name}.nii.gz")
        res = resample_to(vol, ref, interpolation="nearest" if label else "linear")
        return np.asarray(res.data).reshape(tuple(shape))

    arrays: dict[str, np.ndarray] = {}
    for name in TEMPLATES:
        t1 = load(f"{name}_t1_2mm", False).astype(np.float32)
        mask = load(f"{name}_brainmask_2mm", True) > 0
        if name == "colin27":
            t1 = t1 * mask  # whole head → skull-stripped, like the MNI template
        image = percentile_normalize(t1, *INTENSITY_PERCENTILES)
        if name == "mni152":
            tissue = load("mni152_tissue_2mm", True).astype(np.uint8)
        else:
            tissue = _kmeans_tissue(image, mask)
        arrays[f"{name}_image"] = image.astype(np.float32)
        arrays[f"{name}_tissue"] = tissue
        arrays[f"{name}_mask"] = mask.astype(np.uint8)
    arrays["colin27_aal"] = load("colin27_aal_2mm", True).astype(np.uint8)
    arrays["grid_affine"] = grid_affine(spacing, origin)

    used = [n for n in files if any(n.startswith(t) for t in TEMPLATES)]
    meta = {
        "format": "toporeg-template-cache/1",
        "grid": {"shape": list(shape), "spacing_mm": spacing, "origin_ras_mm": list(origin), "orientation": "RAS"},
        "intensity": {"method": "percentile_normalize", "percentiles": list(INTENSITY_PERCENTILES), "clip": True,
                      "skull": "stripped"},
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        "templates": {
            "mni152": {"tissue_source": "ICBM152 2009a GM/WM/CSF maps (bundled mni152_tissue_2mm)"},
            "colin27": {"tissue_source": "derived: 3-class k-means of T1 inside colin27_brainmask_2mm (approximate)",
                        "aal": "AAL 116 regions (mricron indices 1..116)"},
        },
        "sources": [{k: files[n].get(k) for k in ("name", "source", "original", "sha256", "description")}
                    for n in used],
        "licence": "see Resources/SampleData/LICENSE.md (ICBM 2009a: MNI/McGill permissive notice; Colin27 and "
                   "AAL: as distributed in Debian mricron-data)",
        "builder": "toporeg.training.dataset_cache.build_cache",
    }
    return write_npz_cache(out, arrays, meta)


def write_npz_cache(out: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write `arrays` plus `meta` (JSON, as the uint8 array "meta") to the compressed .npz `out`, atomically
    (a temporary file next to it, then renamed); the folder is created. Returns the path."""
    arrays = {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return out


def load_cache(path: str | Path = DEFAULT_CACHE) -> dict:
    """The cache as a dict of numpy arrays plus `meta` (a dict). numpy only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: template cache missing; build it with "
                                f"`python -m toporeg.training.dataset_cache --out {path}`")
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    data["meta"] = json.loads(bytes(data["meta"]).decode())
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_CACHE))
    parser.add_argument("--sample-dir", default=None, help="folder with the bundled sample data and manifest.json")
    args = parser.parse_args(argv)
    path = build_cache(args.out, sample_dir=args.sample_dir)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
