"""`segment()` and `toporeg segment` (issue #6, models half): outputs on the input's native grid (oblique, LPS,
anisotropic, 2D), coherent slice-wise sampling, domain warnings, clear errors, report.json, cancel, --model PATH."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from toporeg.cli.main import main
from toporeg.errors import InputError
from toporeg.io import Volume, load_volume, save_volume
from toporeg.models.weights import save_model
from toporeg.segmentation import MCDropoutUNet, PlainUNet, SegmentationModel, entropy
from toporeg.segmentation.inference import domain_messages, segment
from toporeg.transforms import rotation_matrix

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LPS = np.diag([-1.0, -1.0, 1.0])
CARD = {"task": "tissue", "method": "unet", "labels": {"0": "background", "1": "CSF", "2": "GM", "3": "WM"},
        "input_domain": {"modality": "T1w", "skull": "both", "spacing_mm": [2.0, 2.0, 2.0]}}


class ThresholdModel(SegmentationModel):
    """A 'network' that labels normalised intensity > 0.5: where the labels land shows the geometry is right."""

    method = "unet"

    def __init__(self, ndim: int = 3):
        super().__init__(ndim, 2, 1, (4, 4, 8, 8), "batch")

    @property
    def distinct_samples(self):
        return 1

    def sample_probabilities(self, image, n, generator=None, *, start=0):
        assert all(s % 16 == 0 for s in image.shape[2:])
        logit = 40.0 * (image - 0.5)
        p = torch.cat([torch.sigmoid(-logit), torch.sigmoid(logit)], dim=1)
        return p.unsqueeze(0).expand(n, *p.shape)


class OctantModel(ThresholdModel):
    """Labels the upper half of every network axis: in RAS that must be the right-anterior(-superior) part."""

    def sample_probabilities(self, image, n, generator=None, *, start=0):
        inside = torch.ones(image.shape[2:], dtype=torch.bool)
        for axis, size in enumerate(image.shape[2:]):
            shape = [1] * inside.dim()
            shape[axis] = size
            inside = inside & (torch.arange(size) >= size // 2).view(shape)
        p1 = inside.float().expand(image.shape[0], 1, *image.shape[2:])
        return torch.cat([1 - p1, p1], dim=1).unsqueeze(0).expand(n, -1, -1, *image.shape[2:])


def affine(rotation, spacing, origin, axes=LPS) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rotation_matrix(rotation) @ axes @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def blob(shape, aff) -> np.ndarray:
    """Two off-centre ellipsoids (no symmetry a flip or shift could hide), soft edges in [0, 1], in RAS mm."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    ijk = np.concatenate([ijk, np.zeros(ijk.shape[:-1] + (3 - len(shape),))], -1)
    ras = ijk @ aff[:3, :3].T + aff[:3, 3]
    d1 = np.sqrt((((ras - [6.0, -4.0, 3.0]) / [18.0, 12.0, 9.0]) ** 2).sum(-1)) - 1.0
    d2 = np.sqrt((((ras - [-16.0, 12.0, -2.0]) / [5.0, 6.0, 7.0]) ** 2).sum(-1)) - 1.0
    return (1.0 / (1.0 + np.exp(np.clip(np.minimum(d1, d2) * 12.0, -50, 50)))).astype(np.float32)


def column(shape, aff) -> np.ndarray:
    """A soft-edged vertical (S) cylinder of radius 12 mm through the middle of the field of view: every axial
    slice meets it."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    ras = ijk @ aff[:3, :3].T + aff[:3, 3]
    centre = aff[:3, :3] @ ((np.array(shape) - 1) / 2.0) + aff[:3, 3]
    d = np.hypot(ras[..., 0] - centre[0], ras[..., 1] - centre[1]) / 12.0 - 1.0
    return (1.0 / (1.0 + np.exp(np.clip(d * 12.0, -50, 50)))).astype(np.float32)


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


# --- segment() on files: the native grid ---------------------------------------------------------------------

@pytest.mark.parametrize("spacing,model_ndim", [((2.0, 2.0, 2.0), 3), ((1.5, 2.5, 1.8), 3), ((1.5, 2.5, 1.8), 2)])
def test_segment_keeps_the_native_grid_of_an_oblique_lps_volume(tmp_path, spacing, model_ndim):
    shape = (30, 22, 24)
    aff = affine((0.25, -0.15, 0.3), spacing, (20.0, 18.0, -20.0))
    obj = blob(shape, aff)
    if model_ndim == 2:  # 2D models normalise each axial slice on its own: give every slice the same bright range
        obj = np.maximum(obj, column(shape, aff))
    path = save_volume(Volume(obj * 800.0, aff), tmp_path / "t1.nii.gz")
    image = load_volume(path)
    assert image.orientation_code[:2] in ("LP", "PL", "LS", "SL") or image.orientation_code != "RAS"
    card = {"input_domain": {"spacing_mm": [2.0] * model_ndim}, "labels": {"0": "background", "1": "object"}}
    result = segment(image, ThresholdModel(model_ndim), samples=3, card=card)
    ref = nib.load(str(path))
    for vol in (result.labels, result.probabilities, result.entropy, *result.samples):
        assert vol.spatial_shape == ref.shape and np.allclose(vol.affine, ref.affine, atol=1e-5)
    assert result.probabilities.data.shape == ref.shape + (2,)
    np.testing.assert_allclose(result.probabilities.data.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.entropy.data, entropy(result.probabilities.data, dim=-1), atol=1e-6)
    truth = obj > 0.5
    score = dice(result.labels.data, truth)
    assert score > (0.999 if spacing == (2.0, 2.0, 2.0) else 0.95), score
    assert all(np.array_equal(s.data, result.labels.data) for s in result.samples)  # deterministic model
    summary = result.summary()
    expected_ml = truth.sum() * np.prod(spacing) / 1000
    assert summary["labels"]["1"]["name"] == "object"
    assert summary["labels"]["1"]["volume_ml"] == pytest.approx(expected_ml, rel=0.05)
    assert summary["labels"]["1"]["boundary_mean_entropy_bits"] > summary["mean_entropy_bits"]


@pytest.mark.parametrize("axes", [LPS, np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])], ids=["axial", "coronal"])
def test_segment_a_2d_image_in_its_plane(tmp_path, axes):
    aff = affine((0.0, 0.0, 0.2), (1.5, 2.0, 3.0), (30.0, -10.0, 25.0), axes)
    aff[:3, 3] = [10.0, 0.0, 0.0] if axes is LPS else [10.0, 0.0, -3.0]
    data = blob((40, 30), aff)
    path = save_volume(Volume(data[:, :, None], aff), tmp_path / "slice.nii.gz")
    image = load_volume(path)
    assert image.spatial_ndim == 2 and data.max() > 0.9
    result = segment(image, ThresholdModel(2), samples=1, card={"input_domain": {"spacing_mm": [1.5, 1.5]}})
    assert result.labels.spatial_shape == image.spatial_shape and np.allclose(result.labels.affine, image.affine)
    assert dice(result.labels.data.reshape(40, 30), data > 0.5) > 0.95
    with pytest.raises(InputError, match="3D segmentation model but the image is 2D"):
        segment(image, ThresholdModel(3))


CORONAL = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])


@pytest.mark.parametrize("shape,axes,model_ndim,ras_axes", [
    ((30, 22, 24), LPS, 3, (0, 1, 2)), ((30, 22, 24), LPS, 2, (0, 1)), ((30, 22, 24), CORONAL, 3, (0, 1, 2)),
    ((40, 30), LPS, 2, (0, 1)), ((40, 30), CORONAL, 2, (0, 2))], ids=["3d", "slicewise", "3d-coronal-axes",
                                                                    "2d-axial", "2d-coronal"])
def test_the_network_sees_canonical_ras(shape, axes, model_ndim, ras_axes):
    """Network axes point R, A(, S): its upper-half octant lands on the right/anterior/superior side."""
    aff = affine((0.2, -0.1, 0.25) if len(shape) == 3 else (0.0, 0.0, 0.25), (2.0, 1.5, 2.5), (5.0, -3.0, 2.0), axes)
    image = Volume(blob(shape, aff) + 0.1, aff)
    result = segment(image, OctantModel(model_ndim), samples=1, card={"input_domain": {"spacing_mm": 2.0}})
    labels = result.labels.data.reshape(image.grid_shape) > 0
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in image.grid_shape], indexing="ij"), -1).reshape(-1, len(shape))
    ras = image.voxel_to_ras(np.concatenate([ijk, np.zeros((len(ijk), 3 - len(shape)))], 1))
    inside = labels.reshape(-1)
    assert 0 < inside.sum() < inside.size
    for axis in ras_axes:
        assert ras[inside, axis].mean() > ras[~inside, axis].mean() + 5.0, "RAS"[axis]


def test_slicewise_samples_are_coherent_whatever_the_slice_batch():
    torch.manual_seed(0)
    model = MCDropoutUNet(ndim=2, n_classes=3, channels=(4, 4, 8, 8)).eval()
    aff = affine((0.1, 0.0, 0.0), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    image = Volume(blob((20, 18, 12), aff), aff)
    a = segment(image, model, samples=5, keep_samples=5, batch_slices=3)
    b = segment(image, model, samples=5, keep_samples=5, batch_slices=64)
    np.testing.assert_allclose(a.probabilities.data, b.probabilities.data, atol=1e-5)
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a.samples, b.samples))
    c = segment(image, model, samples=5, seed=1)
    assert not np.allclose(a.probabilities.data, c.probabilities.data)  # the seed drives the dropout masks


def test_bad_inputs_get_clear_errors():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    model = ThresholdModel(3)
    good = blob((16, 16, 16), aff)
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    cases = [(Volume(nan, aff), "NaN"), (Volume(np.ones((16, 16, 16), np.float32), aff), "constant"),
             (Volume(np.stack([good] * 3, -1), aff, has_channels=True), "single-channel"),
             (Volume(good, np.diag([300.0, 300.0, 300.0, 1.0])), "crop it to the head")]
    for volume, message in cases:
        with pytest.raises(InputError, match=message):
            segment(volume, model)
    with pytest.raises(InputError, match="samples"):
        segment(Volume(good, aff), model, samples=0)
    with pytest.raises(InputError, match="not a segmentation model"):
        segment(Volume(good, aff), torch.nn.Conv3d(1, 1, 1))


def test_domain_warnings():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    ijk = np.stack(np.meshgrid(*[np.arange(110)] * 3, indexing="ij"), -1)
    ball = (np.linalg.norm(ijk - 54.5, axis=-1) < 50).astype(np.float32)  # radius 100 mm: 4.2 L of "head"
    head = Volume(ball, aff)
    stripped = {"input_domain": {"skull": "stripped", "spacing_mm": 2.0}}
    assert any("whole head" in m for m in domain_messages(head, stripped, 3))
    assert not any("whole head" in m for m in domain_messages(head, {"input_domain": {"skull": "both"}}, 3))
    coarse = Volume(ball[::3, ::3, ::3], np.diag([6.0, 6.0, 6.0, 1.0]))
    assert any("coarser" in m for m in domain_messages(coarse, stripped, 3))


# --- the command line ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = PlainUNet(ndim=3, n_classes=4, channels=(4, 4, 8, 8)).eval()
    weights, _ = save_model(model, tmp_path_factory.mktemp("models") / "tiny_seg", card=CARD)
    return weights


@pytest.fixture
def t1(tmp_path) -> Path:
    aff = affine((0.1, 0.2, -0.1), (2.0, 2.2, 1.8), (30.0, 25.0, -20.0))
    return save_volume(Volume(blob((24, 20, 22), aff) * 300 + 20, aff), tmp_path / "t1.nii.gz")


def run_cli(*args) -> int:
    return main(["segment", *map(str, args), "--progress", "none", "--device", "cpu"])


def test_cli_writes_outputs_on_the_native_grid_and_a_report(tiny_model, t1, tmp_path):
    out = tmp_path / "seg"
    assert run_cli(t1, "--out", out, "--model", tiny_model, "--samples", 4, "--save-samples", 2) == 0
    ref = nib.load(str(t1))
    for name in ("labels.nii.gz", "probabilities.nii.gz", "entropy.nii.gz", "samples/sample_00.nii.gz",
                 "samples/sample_01.nii.gz"):
        img = nib.load(str(out / name))
        assert img.shape[:3] == ref.shape and np.allclose(img.affine, ref.affine, atol=1e-5), name
    assert nib.load(str(out / "probabilities.nii.gz")).get_fdata().squeeze().shape == ref.shape + (4,)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["command"] == "segment" and report["timings"]["total_seconds"] > 0
    assert {"toporeg", "torch"} <= set(report["versions"]) and report["settings"]["samples"] == 4
    assert report["task"] == "tissue" and report["method"] == "unet" and report["model"]["name"] == "tiny_seg"
    labels = report["metrics"]["labels"]
    assert [labels[k]["name"] for k in ("1", "2", "3")] == ["CSF", "GM", "WM"]
    voxel_ml = abs(np.linalg.det(ref.affine[:3, :3])) / 1000
    assert all(v["volume_ml"] == pytest.approx(v["voxels"] * voxel_ml, abs=1e-4) for v in labels.values())
    assert sum(v["voxels"] for v in labels.values()) == np.count_nonzero(nib.load(str(out / "labels.nii.gz")).dataobj)
    assert 0 <= report["metrics"]["mean_entropy_bits"] <= 2.0
    assert sorted(report["files"]) == ["entropy", "labels", "probabilities", "sample_00", "sample_01"]
    assert not list(tmp_path.glob(".seg.partial-*"))


def test_cli_seg_nrrd_and_json_progress(tiny_model, t1, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(t1), "--out", str(out), "--model", str(tiny_model), "--format", "seg.nrrd",
                 "--samples", "2", "--progress", "json", "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines and all({"stage", "fraction", "message"} <= set(line) for line in lines)
    assert lines[-1]["fraction"] == 1.0
    labels = load_volume(out / "labels.seg.nrrd")
    assert labels.spatial_shape == nib.load(str(t1)).shape
    names = {s["name"] for s in labels.meta["segments"]}
    assert names and names <= {"CSF", "GM", "WM"}


def test_cli_missing_bundled_model_names_the_training_command(t1, tmp_path, monkeypatch, capsys):
    (tmp_path / "res").mkdir()
    monkeypatch.setenv("TOPOREG_RESOURCES", str(tmp_path / "res"))
    monkeypatch.setenv("TOPOREG_MODELS", str(tmp_path / "no_models"))
    out = tmp_path / "seg"
    assert run_cli(t1, "--out", out, "--model", "unet", "--task", "tissue") == 2
    err = capsys.readouterr().err
    assert "seg_tissue_unet" in err and "toporeg train segmentation --model unet --task tissue" in err
    assert not out.exists()


def test_cli_rejects_bad_input_and_leaves_nothing(tiny_model, tmp_path, capsys):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nan = np.ones((16, 16, 16), np.float32)
    nan[0, 0, 0] = np.nan
    cases = {"nan.nii.gz": (nan, "NaN"), "flat.nii.gz": (np.ones((16, 16, 16), np.float32), "constant"),
             "rgb.nii.gz": (np.random.default_rng(0).random((16, 16, 16, 3)).astype(np.float32), "single-channel")}
    for name, (data, message) in cases.items():
        path = tmp_path / name
        nib.save(nib.Nifti1Image(data, aff), str(path))
        out = tmp_path / f"out_{name}"
        assert run_cli(path, "--out", out, "--model", tiny_model) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() or not any(out.iterdir())
    assert run_cli(tmp_path / "missing.nii.gz", "--out", tmp_path / "o", "--model", tiny_model) == 2
    assert "file not found" in capsys.readouterr().err
    assert run_cli(tmp_path / "nan.nii.gz", "--out", tmp_path / "o", "--model", tiny_model, "--save-samples", 20) == 2
    assert "--save-samples" in capsys.readouterr().err


def test_cli_task_mismatch_cancel_and_never_overwrites_the_input(tiny_model, t1, tmp_path, capsys):
    assert run_cli(t1, "--out", tmp_path / "o", "--model", tiny_model, "--task", "brain") == 2
    assert "'tissue' task" in capsys.readouterr().err
    stop = tmp_path / "stop"
    stop.touch()
    out = tmp_path / "cancelled"
    assert run_cli(t1, "--out", out, "--model", tiny_model, "--cancel-file", stop) == 130
    assert not out.exists() or not any(out.iterdir())
    victim = tmp_path / "labels.nii.gz"
    victim.write_bytes(t1.read_bytes())
    assert run_cli(victim, "--out", tmp_path, "--model", tiny_model) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert victim.read_bytes() == t1.read_bytes()


class RecordingModel(ThresholdModel):
    """ThresholdModel that keeps every input the network was given."""

    def __init__(self, ndim: int = 2):
        super().__init__(ndim)
        self.inputs: list[torch.Tensor] = []

    def sample_probabilities(self, image, n, generator=None, *, start=0):
        self.inputs.append(image.clone())
        return super().sample_probabilities(image, n, generator, start=start)


def test_2d_models_get_each_slice_normalised_as_in_training():
    """2D models were trained on individually percentile-normalised axial slices: at inference each slice must be
    normalised on its own by the same function, so a slice scaled by 40 (or 0.3) gives the very same input."""
    from toporeg.training.templates import percentile_normalise_torch

    aff = np.diag([2.0, 2.0, 2.0, 1.0])  # RAS at the card's spacing: the network grid is the image grid
    pattern = blob((32, 32, 1), aff)[..., 0] + 0.05
    scales = [1.0, 40.0, 0.3, 5.0]
    data = np.stack([pattern * s for s in scales], -1).astype(np.float32)
    model = RecordingModel(2)
    result = segment(Volume(data, aff), model, samples=1, card={"input_domain": {"spacing_mm": [2.0, 2.0]}},
                     batch_slices=16)
    x = torch.cat(model.inputs)  # (slices, 1, 32, 32)
    assert x.shape == (4, 1, 32, 32)
    want = percentile_normalise_torch(torch.as_tensor(pattern)[None, None])
    for k in range(4):
        torch.testing.assert_close(x[k:k + 1], want, atol=1e-5, rtol=0)
    labels = np.asarray(result.labels.data)
    assert all(np.array_equal(labels[..., k], labels[..., 0]) for k in range(4)) and labels.any()
