#!/usr/bin/env python3
"""Regenerate TopoReg's bundled sample volumes (Resources/SampleData) from offline packages.

Sources (both public, both installable without network access to the original sites):
  * nilearn (pip): the ICBM152 2009a nonlinear symmetric T1 / GM / WM templates shipped in
    ``nilearn/datasets/data`` and read through ``nilearn.datasets.load_mni152_*(resolution=2)``.
  * Debian ``mricron-data``: Colin27 ``ch2.nii.gz`` (whole head), ``ch2bet.nii.gz`` (brain) and the
    AAL atlas ``aal.nii.gz`` (+ ``aal.nii.txt`` names), all on the same 1 mm grid.

Outputs (all NIfTI-1, gzip with mtime 0 so that re-running gives byte-identical files for the same
inputs and library versions), plus ``manifest.json`` (roles, label names, sha256) and ``LICENSE.md``:

  mni152_t1_2mm.nii.gz          float32  ICBM152 2009a T1, nilearn's 2 mm grid (99x117x95)
  mni152_brainmask_2mm.nii.gz   uint8    nilearn brain mask (T1 > 0.2), same grid
  mni152_tissue_2mm.nii.gz      uint8    0 bg, 1 CSF, 2 GM, 3 WM (argmax of CSF/GM/WM inside mask)
  colin27_t1_2mm.nii.gz         int16    Colin27 ch2 (whole head), 2 mm grid (91x109x91)
  colin27_brainmask_2mm.nii.gz  uint8    ch2bet > 0, same grid
  colin27_aal_2mm.nii.gz        uint8    AAL (116 regions, mricron indices), nearest neighbour

Usage:  python scripts/make_sample_data.py [--out Resources/SampleData] [--no-aal] [--check]
Needs: numpy, scipy, nibabel, nilearn (``pip install nilearn``), Debian package mricron-data.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
MRICRON_COPYRIGHT = Path("/usr/share/doc/mricron-data/copyright")
TISSUE_LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
MASK_LABELS = {0: "background", 1: "brain"}
XFORM_MNI = 4  # NIFTI_XFORM_MNI_152: both templates live in MNI space

# Colin27 target grid: the SPM-style 2 mm MNI grid (91x109x91), whose voxel centres coincide with
# every other centre of mricron's 1 mm grid (origin -90, -125, -71 mm), RAS orientation kept.
COLIN_SHAPE = (91, 109, 91)
COLIN_AFFINE = np.array([[2.0, 0, 0, -90.0], [0, 2.0, 0, -125.0], [0, 0, 2.0, -71.0], [0, 0, 0, 1]])
# Anti-alias before the 1 mm -> 2 mm linear resampling: Gaussian with FWHM sqrt(2^2 - 1^2) mm.
ANTI_ALIAS_SIGMA_MM = float(np.sqrt(2.0**2 - 1.0**2) / (2 * np.sqrt(2 * np.log(2))))

MNI_NOTICE = """Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def make_img(data: np.ndarray, affine: np.ndarray, dtype, descrip: str, intent: str | None = None):
    data = np.asarray(data).astype(dtype)
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(dtype)
    img.set_qform(affine, code=XFORM_MNI)
    img.set_sform(affine, code=XFORM_MNI)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = descrip[:79].encode()
    hdr["scl_slope"] = np.nan  # no scaling: values are stored as is
    hdr["scl_inter"] = np.nan
    if intent:
        hdr.set_intent(intent)
    hdr["cal_min"], hdr["cal_max"] = float(data.min()), float(data.max())
    return img


def save_deterministic(img: nib.Nifti1Image, path: Path) -> None:
    """Write a .nii.gz whose bytes depend only on the image (no gzip timestamp / file name)."""
    raw = img.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(raw)
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resample_to_grid(data, src_affine, dst_affine, dst_shape, order: int) -> np.ndarray:
    """Sample `data` (on src_affine) at the voxel centres of (dst_affine, dst_shape)."""
    vox = np.linalg.solve(src_affine, dst_affine)  # dst voxel -> src voxel
    return ndi.affine_transform(
        np.asarray(data, dtype=np.float32), vox[:3, :3], offset=vox[:3, 3], output_shape=dst_shape,
        order=order, mode="constant", cval=0.0, prefilter=False,
    )


def pkg_version(name: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_aal_names(txt: Path) -> dict[int, str]:
    names = {0: "background"}
    for line in txt.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def build_mni(out: Path) -> list[dict]:
    from nilearn import datasets  # noqa: PLC0415 (optional dependency)

    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    aff = t1.affine
    for other in (gm, wm, mask):
        assert other.shape == t1.shape and np.allclose(other.affine, aff), "nilearn grids differ"

    t1_data = t1.get_fdata(dtype=np.float32)
    m = mask.get_fdata() > 0
    p_gm = np.clip(gm.get_fdata(dtype=np.float32), 0, 1)
    p_wm = np.clip(wm.get_fdata(dtype=np.float32), 0, 1)
    p_csf = np.clip(1.0 - p_gm - p_wm, 0, 1)  # CSF = brain mask - GM - WM
    tissue = np.where(m, 1 + np.argmax(np.stack([p_csf, p_gm, p_wm]), axis=0), 0).astype(np.uint8)

    save_deterministic(make_img(t1_data, aff, np.float32, "ICBM152 2009a sym T1 (nilearn), 2mm"),
                       out / "mni152_t1_2mm.nii.gz")
    save_deterministic(make_img(m, aff, np.uint8, "ICBM152 2009a brain mask (nilearn T1>0.2)",
                                "label"), out / "mni152_brainmask_2mm.nii.gz")
    save_deterministic(make_img(tissue, aff, np.uint8, "ICBM152 2009a tissue 1=CSF 2=GM 3=WM",
                                "label"), out / "mni152_tissue_2mm.nii.gz")
    import nilearn  # noqa: PLC0415

    src = f"nilearn {nilearn.__version__} (nilearn/datasets/data)"
    return [
        dict(name="mni152_t1_2mm.nii.gz", role="image", subject="mni152", modality="T1w",
             skull="stripped", source=src,
             original="mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             description="ICBM152 2009a nonlinear symmetric T1 template (skull-stripped, "
                         "intensities rescaled to [0, 1] by nilearn), 2 mm grid",
             processing="nilearn.datasets.load_mni152_template(resolution=2); stored float32"),
        dict(name="mni152_brainmask_2mm.nii.gz", role="mask", subject="mni152", reference="mni152_t1_2mm.nii.gz",
             labels=MASK_LABELS, source=src, original="mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz (thresholded)",
             description="ICBM152 2009a whole-brain mask (includes ventricles and sulcal CSF)",
             processing="nilearn.datasets.load_mni152_brain_mask(resolution=2) (T1 > 0.2)"),
        dict(name="mni152_tissue_2mm.nii.gz", role="labels", subject="mni152", reference="mni152_t1_2mm.nii.gz",
             labels=TISSUE_LABELS, source=src,
             original="mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz, "
                      "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
             description="ICBM152 2009a hard tissue labels: 0 background, 1 CSF, 2 GM, 3 WM",
             processing="GM/WM = load_mni152_{gm,wm}_template(resolution=2); CSF = clip(1 - GM - WM); "
                        "inside the brain mask each voxel takes the label of the largest of "
                        "CSF/GM/WM probabilities (ties -> CSF < GM < WM order), 0 outside"),
    ]


def build_colin(out: Path, with_aal: bool) -> list[dict]:
    ch2 = nib.load(str(MRICRON_TEMPLATES / "ch2.nii.gz"))
    bet = nib.load(str(MRICRON_TEMPLATES / "ch2bet.nii.gz"))
    assert np.allclose(ch2.affine, bet.affine) and ch2.shape == bet.shape
    assert nib.aff2axcodes(ch2.affine) == ("R", "A", "S")
    src_aff = ch2.affine
    spacing = np.sqrt((src_aff[:3, :3] ** 2).sum(0))
    sigma_vox = ANTI_ALIAS_SIGMA_MM / spacing

    t1 = ndi.gaussian_filter(np.asarray(ch2.dataobj, dtype=np.float32), sigma_vox)
    t1 = resample_to_grid(t1, src_aff, COLIN_AFFINE, COLIN_SHAPE, order=1)
    t1 = np.clip(np.rint(t1), 0, 32767).astype(np.int16)

    bet_mask = (np.asarray(bet.dataobj) > 0).astype(np.float32)
    bet_mask = ndi.gaussian_filter(bet_mask, sigma_vox)
    mask = resample_to_grid(bet_mask, src_aff, COLIN_AFFINE, COLIN_SHAPE, order=1) >= 0.5
    mask = ndi.binary_fill_holes(mask)

    save_deterministic(make_img(t1, COLIN_AFFINE, np.int16, "Colin27 ch2 T1 whole head (mricron), 2mm"),
                       out / "colin27_t1_2mm.nii.gz")
    save_deterministic(make_img(mask, COLIN_AFFINE, np.uint8, "Colin27 brain mask (ch2bet>0), 2mm",
                                "label"), out / "colin27_brainmask_2mm.nii.gz")
    src = f"Debian mricron-data {pkg_version('mricron-data')} ({MRICRON_TEMPLATES})"
    entries = [
        dict(name="colin27_t1_2mm.nii.gz", role="image", subject="colin27", modality="T1w",
             skull="on", source=src, original="ch2.nii.gz",
             description="Colin27 (single subject, average of 27 scans) whole-head T1, 2 mm grid",
             processing=f"Gaussian anti-alias (sigma {ANTI_ALIAS_SIGMA_MM:.3f} mm), trilinear onto "
                        "the 2 mm 91x109x91 grid (origin -90,-125,-71 mm, RAS), rounded to int16"),
        dict(name="colin27_brainmask_2mm.nii.gz", role="mask", subject="colin27",
             reference="colin27_t1_2mm.nii.gz", labels=MASK_LABELS, source=src, original="ch2bet.nii.gz",
             description="Colin27 brain mask",
             processing="ch2bet > 0, same anti-alias + trilinear, >= 0.5, holes filled"),
    ]
    if with_aal:
        aal = nib.load(str(MRICRON_TEMPLATES / "aal.nii.gz"))
        assert np.allclose(aal.affine, src_aff) and aal.shape == ch2.shape
        lab = resample_to_grid(np.asarray(aal.dataobj), src_aff, COLIN_AFFINE, COLIN_SHAPE, order=0)
        lab = np.rint(lab).astype(np.uint8)
        names = read_aal_names(MRICRON_TEMPLATES / "aal.nii.txt")
        present = set(np.unique(lab).tolist())
        save_deterministic(make_img(lab, COLIN_AFFINE, np.uint8, "AAL (mricron aal.nii.gz) on Colin27, 2mm",
                                    "label"), out / "colin27_aal_2mm.nii.gz")
        entries.append(dict(
            name="colin27_aal_2mm.nii.gz", role="labels", subject="colin27", reference="colin27_t1_2mm.nii.gz",
            labels={k: v for k, v in names.items() if k in present}, source=src,
            original="aal.nii.gz, aal.nii.txt",
            description="AAL atlas (Tzourio-Mazoyer et al. 2002), 116 regions, drawn on Colin27; "
                        "values are mricron's indices 1..116 (not the SPM codes 2001..9170)",
            processing="nearest neighbour onto the 2 mm grid"))
    return entries


# --------------------------------------------------------------------------------------------
# manifest, licence, checks
# --------------------------------------------------------------------------------------------
def describe(out: Path, entry: dict) -> dict:
    img = nib.load(str(out / entry["name"]))
    e = dict(entry)
    e["shape"] = list(img.shape)
    e["spacing_mm"] = [float(z) for z in img.header.get_zooms()[:3]]
    e["orientation"] = "".join(nib.aff2axcodes(img.affine))
    e["dtype"] = str(img.get_data_dtype())
    e["bytes"] = (out / entry["name"]).stat().st_size
    e["sha256"] = sha256(out / entry["name"])
    if "labels" in e:
        e["labels"] = {str(k): v for k, v in e["labels"].items()}
    return e


def check_pairs(out: Path, entries: list[dict]) -> None:
    by_name = {e["name"]: e for e in entries}
    for e in entries:
        ref = e.get("reference")
        if not ref:
            continue
        a, b = nib.load(str(out / e["name"])), nib.load(str(out / ref))
        ok = a.shape == b.shape and np.array_equal(a.affine, b.affine)
        print(f"  grid {'OK ' if ok else 'BAD'} {e['name']} vs {ref}: {a.shape}")
        if not ok:
            raise SystemExit(f"{e['name']} is not on the grid of {ref}")
        data = np.asarray(a.dataobj)
        unknown = set(np.unique(data).tolist()) - {int(k) for k in by_name[e["name"]]["labels"]}
        if unknown:
            raise SystemExit(f"{e['name']}: values without a name: {sorted(unknown)[:10]}")


LICENSE_TEMPLATE = """# Sample data: sources and licences

These volumes are small derivatives of public templates, produced by
`scripts/make_sample_data.py` (re-run it to regenerate them byte for byte). They are
distributed under their own terms, listed below, **not** under the Apache-2.0 licence of the
TopoReg code. `manifest.json` gives each file's role, label names and sha256.

| File | Source package | Original file(s) | Processing |
|---|---|---|---|
{table}

## ICBM152 2009a nonlinear symmetric template (`mni152_*`)

Source: the copy shipped in the `nilearn` Python package (`nilearn/datasets/data/
mni_icbm152_{{t1,gm,wm}}_tal_nlin_sym_09a_converted.nii.gz`, {nilearn}); originally
<https://www.bic.mni.mcgill.ca/~vfonov/icbm/2009/mni_icbm152_nlin_sym_09a_nifti.zip>.
nilearn's dataset description lists the licence as "unknown"; the upstream MNI/McGill notice
for the ICBM 2009 templates is the permissive one below (use, copy, modify and distribute for
any purpose, keep the notice):

```
{mni}
```

Please cite: V. S. Fonov, A. C. Evans, R. C. McKinstry, C. R. Almli, D. L. Collins, *Unbiased
nonlinear average age-appropriate brain templates from birth to adulthood*, NeuroImage 47 S102
(2009); V. S. Fonov et al., *Unbiased average age-appropriate atlases for pediatric studies*,
NeuroImage 54(1) 313-327 (2011); D. L. Collins et al., *ANIMAL+INSECT: improved cortical
structure segmentation*, IPMI 1999.

## Colin27 and AAL (`colin27_*`)

Source: Debian package `mricron-data` {mricron} (`/usr/share/mricron/templates/ch2.nii.gz`,
`ch2bet.nii.gz`, `aal.nii.gz`, `aal.nii.txt`), part of MRIcron by Chris Rorden. The package is
in Debian *main*; its `/usr/share/doc/mricron-data/copyright` covers these files with
`Files: *` / `Copyright: Copyright 2006-2010, Chris Rorden` / `License: BSD-3-clause`:

```
{bsd}
```

Colin27 (`ch2`) is the MNI single-subject average of 27 scans of one subject
(C. J. Holmes et al., *Enhancement of MR images using registration for signal averaging*,
J Comput Assist Tomogr 22(2) 324-333, 1998), released by the Montreal Neurological Institute
under the same permissive MNI/McGill notice quoted above.

The AAL atlas (N. Tzourio-Mazoyer et al., *Automated anatomical labeling of activations in SPM
using a macroscopic anatomical parcellation of the MNI MRI single-subject brain*, NeuroImage
15:273-289, 2002) was drawn on Colin27. Beyond the Debian BSD-3-clause statement above, the
AAL authors (GIN, Caen/Bordeaux) state in their own readme that AAL "is available to the
scientific community as a copyright freeware under the terms of the GNU General Public
Licence"; `colin27_aal_2mm.nii.gz` is therefore a separate data file that keeps its own
licence (redistribution allowed, cite the paper). Remove it (`--no-aal`) if that matters for
your distribution.
"""


def write_license(out: Path, entries: list[dict], nilearn_version: str) -> None:
    rows = "\n".join(f"| `{e['name']}` | {e['source']} | `{e['original']}` | {e['processing']} |"
                     for e in entries)
    text = MRICRON_COPYRIGHT.read_text(encoding="utf-8") if MRICRON_COPYRIGHT.exists() else ""
    bsd = ""
    if "License: BSD-3-clause\n  Redistribution" in text:
        block = text.split("License: BSD-3-clause\n  Redistribution", 1)[1]
        bsd = "Redistribution" + block
        bsd = "\n".join(line[2:] if line.startswith("  ") else line for line in bsd.splitlines())
        bsd = bsd.replace("\n.\n", "\n\n").strip()
    (out / "LICENSE.md").write_text(LICENSE_TEMPLATE.format(
        table=rows, nilearn=f"nilearn {nilearn_version}", mni=MNI_NOTICE,
        mricron=pkg_version("mricron-data"), bsd=bsd or "(see /usr/share/doc/mricron-data/copyright)"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="Resources/SampleData", help="output folder (default: %(default)s)")
    ap.add_argument("--no-aal", action="store_true", help="do not produce colin27_aal_2mm.nii.gz")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare sha256 with --out's manifest")
    args = ap.parse_args(argv)

    out = Path(args.out)
    if args.check:
        import tempfile  # noqa: PLC0415

        ref = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            main(["--out", tmp] + (["--no-aal"] if args.no_aal else []))
            new = json.loads((Path(tmp) / "manifest.json").read_text(encoding="utf-8"))
        old = {f["name"]: f["sha256"] for f in ref["files"]}
        diff = [f["name"] for f in new["files"] if old.get(f["name"]) != f["sha256"]]
        print("identical" if not diff else f"differ: {diff}")
        return 1 if diff else 0

    import nilearn  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    entries = build_mni(out) + build_colin(out, with_aal=not args.no_aal)
    if args.no_aal and (out / "colin27_aal_2mm.nii.gz").exists():
        (out / "colin27_aal_2mm.nii.gz").unlink()
    entries = [describe(out, e) for e in entries]
    check_pairs(out, entries)
    manifest = {
        "generator": "scripts/make_sample_data.py",
        "versions": {"nilearn": nilearn.__version__, "nibabel": nib.__version__,
                     "mricron-data": pkg_version("mricron-data"), "python": sys.version.split()[0]},
        "license": "LICENSE.md",
        "files": entries,
    }
    text = json.dumps(manifest, indent=2)
    # keep short numeric lists (shape, spacing) on one line
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    (out / "manifest.json").write_text(text + "\n", encoding="utf-8")
    write_license(out, entries, nilearn.__version__)
    total = 0
    for e in entries:
        total += e["bytes"]
        print(f"  {e['name']:32s} {e['dtype']:8s} {str(tuple(e['shape'])):16s} {e['bytes'] / 1e6:6.2f} MB")
    print(f"  total {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
