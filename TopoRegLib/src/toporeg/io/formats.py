"""Load and save volumes: NIfTI (nibabel), NRRD / MHA / MHD (SimpleITK), Slicer .seg.nrrd, DICOM series.

NIfTI is read and written by nibabel so that its RAS affine is used as stored; every ITK format goes
through `itk_convert`, which owns the LPS <-> RAS flip. SimpleITK is imported only when an ITK format
is used, so NIfTI-only environments (a GPU training node) need nibabel alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from ..errors import InputError
from .atomic import atomic_path, split_suffix
from .validate import check_geometry
from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SEG_SUFFIX = ".seg.nrrd"
SUPPORTED = NIFTI_SUFFIXES + ITK_SUFFIXES + (SEG_SUFFIX, "DICOM folder")


def file_suffix(path: str | Path) -> str:
    return split_suffix(Path(path))[1].lower()


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder` (sorted), e.g. a control set; refuses an empty folder."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and file_suffix(p) in NIFTI_SUFFIXES + ITK_SUFFIXES)
    if not files:
        raise InputError(f"no image files ({', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)}) in this folder", folder)
    return files


def load_volume(path: str | Path, *, is_label: bool | None = None) -> Volume:
    """Read an image file (or DICOM series folder) into a `Volume` with its exact geometry.

    `is_label=None` guesses: .seg.nrrd files and integer images with few distinct values are labels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    try:
        if path.is_dir():
            volume = _load_dicom_series(path)
        else:
            suffix = file_suffix(path)
            if suffix == SEG_SUFFIX:
                from .segmentation_nrrd import read_seg_nrrd

                volume = read_seg_nrrd(path)
            elif suffix in NIFTI_SUFFIXES:
                volume = _load_nifti(path)
            elif suffix in ITK_SUFFIXES:
                import SimpleITK as sitk

                from .itk_convert import volume_from_sitk

                volume = volume_from_sitk(sitk.ReadImage(str(path)))
            else:
                raise InputError(f"unsupported file type '{suffix or path.name}' (supported: {', '.join(SUPPORTED)})", path)
    except InputError:
        raise
    except (RuntimeError, OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read image ({first})", path) from exc
    volume.meta["path"] = str(path)
    if is_label is not None:
        volume.is_label = is_label
    elif not volume.is_label:
        volume.is_label = looks_like_labels(volume.data)
    check_geometry(volume, str(path))
    return volume


def looks_like_labels(data: np.ndarray, max_labels: int = 512) -> bool:
    """Integer-valued data with few distinct values is a label map."""
    if data.size == 0 or not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
        return False
    sample = data.ravel()[:: max(1, data.size // 2_000_000)]
    return np.unique(sample).size <= max_labels and sample.min() >= 0


def _load_nifti(path: Path) -> Volume:
    img = nib.load(str(path))
    if len(img.shape) > 5 or (len(img.shape) == 5 and img.shape[3] != 1):
        raise InputError(f"unsupported NIfTI shape {img.shape} (expected 2D/3D, vector or 4D)", path)
    hdr = img.header
    slope, inter = hdr.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    data = np.asanyarray(img.dataobj) if not scaled else img.get_fdata(dtype=np.float32)
    data = np.asarray(data)
    has_channels = False
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector intent: (i, j, k, 1, c)
        data = data[:, :, :, 0, :]
        has_channels = True
    elif data.ndim == 4:
        if data.shape[3] == 1:
            data = data[..., 0]
        else:
            has_channels = True  # 4D: caller decides whether channels (or time) are acceptable
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(data, affine, has_channels=has_channels, meta={"format": "nifti"})


def _load_dicom_series(folder: Path) -> Volume:
    import SimpleITK as sitk

    from .itk_convert import volume_from_sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError("folder contains no DICOM series", folder)
    if len(series) > 1:
        raise InputError(f"folder contains {len(series)} DICOM series; point to a folder with one series", folder)
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    return volume_from_sitk(reader.Execute(), meta={"format": "dicom", "series_uid": series[0]})


def save_volume(volume: Volume, path: str | Path) -> Path:
    """Write `volume` atomically; the format follows the suffix. Returns the path written.

    2D images go to ITK formats as one-slice 3D images so the slice's position and orientation in
    RAS space (the full 4x4 affine) survive the round trip.
    """
    path = Path(path)
    suffix = file_suffix(path)
    if path.is_dir() or suffix in ("", ".dcm"):
        raise InputError("DICOM output is not supported; save as .nii.gz, .nrrd, .mha or .mhd", path)
    check_geometry(volume, str(path))
    if suffix == SEG_SUFFIX:
        from .segmentation_nrrd import write_seg_nrrd

        with atomic_path(path) as tmp:
            write_seg_nrrd(volume, tmp)
    elif suffix in NIFTI_SUFFIXES:
        with atomic_path(path) as tmp:
            nib.save(nifti_image(volume), str(tmp))
    elif suffix == ".mhd":
        _save_mhd(volume, path)
    elif suffix in ITK_SUFFIXES:
        _write_itk(volume, path)
    else:
        raise InputError(f"unsupported output type '{suffix}' (use .nii.gz, .nii, .nrrd, .seg.nrrd, .mha or .mhd)", path)
    return path


def nifti_image(volume: Volume) -> nib.Nifti1Image:
    """A NIfTI-1 image with sform (and qform where the affine is a rotation+scaling) set to the affine."""
    data = volume.data
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if volume.has_channels and data.ndim == 4:
        data = data[:, :, :, None, :]  # NIfTI vector layout (i, j, k, t=1, c)
    elif volume.has_channels and data.ndim == 3:
        data = data[:, :, None, None, :]  # a 2D (i, j) grid's vectors: (i, j, k=1, t=1, c)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_sform(volume.affine, code=1)
    rot = volume.direction
    if np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
        img.set_qform(volume.affine, code=1)
    else:
        img.set_qform(None, code=0)  # sheared affine: only the sform can hold it
    if volume.has_channels:
        img.header.set_intent("vector")
    img.header.set_xyzt_units("mm", "sec")
    return img


def _write_itk(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    from .itk_convert import sitk_from_volume

    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk_from_volume(volume, force_3d=True), str(tmp), useCompression=True)


def _save_mhd(volume: Volume, path: Path) -> None:
    """MetaImage header + raw data: write both into a temp folder, then move the pair into place."""
    import SimpleITK as sitk

    from .itk_convert import sitk_from_volume

    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.partial-", dir=path.parent))
    try:
        tmp = tmpdir / path.name
        sitk.WriteImage(sitk_from_volume(volume, force_3d=True), str(tmp), useCompression=True)
        for item in sorted(tmpdir.iterdir(), key=lambda p: p.suffix == ".mhd"):  # data first, header last
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
