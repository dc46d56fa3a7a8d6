"""Geometry-exact round trips through every supported format, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import oblique_affine
from toporeg.errors import InputError
from toporeg.io import Volume, load_volume, save_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_round_trip_voxels_exact_and_affine_to_format_precision(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(7, 9, 5)) * 100).astype(dtype)
    vol = Volume(data, oblique_affine())
    back = load_volume(save_volume(vol, tmp_path / f"img{suffix}"))
    assert back.data.dtype == dtype and np.array_equal(back.data, data)
    tol = 1e-4 if suffix.startswith(".nii") else 1e-9  # NIfTI stores float32
    np.testing.assert_allclose(back.affine, vol.affine, atol=tol)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spacing=st.tuples(*[st.floats(0.3, 4.0)] * 3), angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
       origin=st.tuples(*[st.floats(-200, 200)] * 3), suffix=st.sampled_from(FORMATS))
def test_random_oblique_geometry_round_trips(tmp_path_factory, spacing, angles, origin, suffix):
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), oblique_affine(spacing, angles, origin))
    back = load_volume(save_volume(vol, tmp_path_factory.mktemp("h") / f"v{suffix}"))
    assert np.array_equal(back.data, vol.data)
    tol = 2e-4 * max(1.0, np.abs(origin).max() / 100) if suffix.startswith(".nii") else 1e-9
    np.testing.assert_allclose(back.affine, vol.affine, atol=tol)
    # the physical position of a voxel agrees with what SimpleITK sees in its LPS world
    if suffix in (".nrrd", ".mha"):
        img = sitk.ReadImage(back.meta["path"])
        lps = np.array(img.TransformIndexToPhysicalPoint((2, 3, 4)))
        ras = vol.voxel_to_ras([2, 3, 4])
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-6)


def test_nifti_agrees_with_simpleitk_physical_points(tmp_path):
    vol = Volume(np.zeros((5, 6, 7), np.float32), oblique_affine())
    path = save_volume(vol, tmp_path / "a.nii.gz")
    img = sitk.ReadImage(str(path))
    lps = np.array(img.TransformIndexToPhysicalPoint((4, 1, 3)))
    np.testing.assert_allclose(lps * [-1, -1, 1], vol.voxel_to_ras([4, 1, 3]), atol=1e-4)


def test_2d_and_multichannel_round_trip(tmp_path):
    aff = oblique_affine(angles=(0, 0, 0.4))
    img2d = Volume(np.arange(30, dtype=np.float32).reshape(5, 6), aff)
    for suffix in (".nii.gz", ".nrrd"):
        back = load_volume(save_volume(img2d, tmp_path / f"two{suffix}"))
        assert back.spatial_ndim == 2 and np.array_equal(back.data.reshape(5, 6), img2d.data)
        np.testing.assert_allclose(back.voxel_to_ras([3, 2, 0]), img2d.voxel_to_ras([3, 2, 0]), atol=1e-4)
    vec = Volume(np.random.default_rng(1).normal(size=(4, 5, 6, 3)).astype(np.float32), aff, has_channels=True)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        back = load_volume(save_volume(vec, tmp_path / f"vec{suffix}"))
        assert back.has_channels and np.array_equal(back.data, vec.data)


def test_seg_nrrd_round_trip_keeps_labels_and_names(tmp_path):
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:5, 1:4] = 3
    labels[4:6, :, 5:] = 7
    vol = Volume(labels, oblique_affine(), is_label=True,
                 meta={"segments": [{"name": "tumour", "label": 3, "color": [1, 0, 0]}]})
    back = load_volume(save_volume(vol, tmp_path / "s.seg.nrrd"))
    assert back.is_label and np.array_equal(back.data, labels)
    names = {s["label"]: s["name"] for s in back.meta["segments"]}
    assert names == {3: "tumour", 7: "Segment_7"}
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)


def test_dicom_series_loads_with_geometry(tmp_path):
    data = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 251).astype(np.int16)
    vol = Volume(data, oblique_affine(spacing=(0.8, 0.8, 2.5), angles=(0, 0, 0)))
    from toporeg.io.itk_convert import sitk_from_volume
    img = sitk_from_volume(vol)
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    cosines = "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))  # row then column direction
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for key, value in [("0020|000e", "1.2.826.0.1.3680043.2.1125.1"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", cosines),
                           ("0008|0060", "MR"), ("0028|0030", "0.8\\0.8"), ("0018|0050", "2.5")]:
            sl.SetMetaData(key, value)
        writer.SetFileName(str(series / f"s{k:03d}.dcm"))
        writer.Execute(sl)
    back = load_volume(series)
    assert np.array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_to_ras([1, 2, 3]), vol.voxel_to_ras([1, 2, 3]), atol=1e-3)


@pytest.mark.parametrize("name,content,problem", [
    ("missing.nii.gz", None, "file not found"),
    ("image.png", b"not an image", "unsupported file type"),
    ("broken.nii.gz", b"garbage", "cannot read image"),
])
def test_bad_files_give_one_line_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        load_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_zero_spacing_and_singular_affine_refused(tmp_path):
    aff = np.eye(4)
    aff[1, 1] = 0.0
    with pytest.raises(InputError, match="spacing"):
        save_volume(Volume(np.zeros((3, 3, 3), np.float32), aff), tmp_path / "z.nii.gz")
    assert not list(tmp_path.iterdir())


def test_failed_save_leaves_no_partial_file(tmp_path):
    vol = Volume(np.zeros((3, 3, 3), np.float32), np.eye(4))
    target = tmp_path / "out.nii.gz"
    save_volume(vol, target)
    before = target.read_bytes()
    with pytest.raises(InputError):
        save_volume(Volume(np.zeros((3, 3, 3)), np.diag([1, 0, 1, 1.0])), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
