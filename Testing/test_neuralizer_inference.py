"""`neuralize()` on volumes (issue #7): predictions on the target's native grid (oblique, LPS-stored, anisotropic,
every plane, 2D), context-order invariance, N = 1 and 32, label binarisation, identity alignment, image units,
clear input errors; and named context sets (JSON round trip with relative paths, missing files)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import textured_phantom
from toporeg.errors import InputError
from toporeg.io import Volume, load_volume, save_volume
from toporeg.neuralizer.context_sets import ContextSet
from toporeg.neuralizer.inference import context_mask, neuralize
from toporeg.neuralizer.model import Neuralizer
from toporeg.transforms import rotation_matrix

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CARD = {"neuralizer": {"spacing_mm": 2.0, "max_context": 4}}
LPS = np.diag([-1.0, -1.0, 1.0])


class MeanContext(torch.nn.Module):
    """A 'network' that predicts the mean context output: where the contexts' labels land shows the geometry."""

    divisor, in_channels = 8, 3

    def forward(self, target, context_in, context_out):
        assert all(s % 8 == 0 for s in target.shape[-2:]) and target.shape[1] == 3
        return context_out.mean(1)


class UpperHalf(MeanContext):
    """Labels the upper half of the slice's second axis: which half that is in RAS pins the slice layout."""

    def forward(self, target, context_in, context_out):
        w = target.shape[-1]
        return (torch.arange(w) >= w // 2).float().expand(target.shape[0], 1, *target.shape[-2:])


def affine(rotation, spacing, origin, axes=LPS) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rotation_matrix(rotation) @ axes @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def ras_of(shape, aff) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    ijk = np.concatenate([ijk, np.zeros(ijk.shape[:-1] + (3 - len(shape),))], -1)
    return ijk @ aff[:3, :3].T + aff[:3, 3]


def ellipsoids(shape, aff) -> np.ndarray:
    """Labels 1 and 2: two off-centre ellipsoids in RAS mm (no symmetry a flip could hide)."""
    ras = ras_of(shape, aff)
    lab = np.zeros(shape, np.uint8)
    lab[np.sqrt((((ras - [6.0, -4.0, 3.0]) / [16.0, 11.0, 9.0]) ** 2).sum(-1)) < 1] = 1
    lab[np.sqrt((((ras - [-14.0, 10.0, -2.0]) / [6.0, 7.0, 7.0]) ** 2).sum(-1)) < 1] = 2
    return lab


def pair(shape, aff, seed=0) -> tuple[Volume, Volume]:
    lab = ellipsoids(shape, aff)
    img = textured_phantom(shape, seed) * 0.3 + lab * 0.5
    return Volume(img.astype(np.float32), aff), Volume(lab, aff, is_label=True)


def dice(a, b) -> float:
    return 2.0 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)


@pytest.fixture(scope="module")
def oblique_target(tmp_path_factory):
    """An oblique, anisotropic 3D target stored as LPS NIfTI and loaded back (the file's geometry)."""
    aff = affine((0.25, -0.15, 0.35), (1.6, 1.9, 2.7), (30.0, 38.0, -20.0))
    path = tmp_path_factory.mktemp("nz") / "target.nii.gz"
    save_volume(pair((36, 34, 22), aff)[0], path)
    return load_volume(path)


@pytest.fixture(scope="module")
def context():
    return pair((30, 34, 26), affine((0.0, 0.05, -0.1), (2.2, 2.0, 2.1), (32.0, 36.0, -25.0)), seed=1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Neuralizer(channels=4, levels=2).eval()


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_slicewise_prediction_lands_on_the_oblique_native_grid(oblique_target, context, plane):
    truth = ellipsoids(oblique_target.grid_shape, oblique_target.affine) > 0
    res = neuralize(oblique_target, [context], model=MeanContext(), card=CARD, plane=plane, align=False,
                    device="cpu", context_size=1)
    assert res.prediction.same_grid(oblique_target) and res.prediction.data.shape == oblique_target.data.shape
    assert res.prediction.data.dtype == np.uint8 and res.probability.same_grid(oblique_target)
    assert dice(res.prediction.data > 0, truth) > 0.85  # 2 mm network grid, nearest context labels
    assert res.report["plane"] == plane and res.report["network_grid"]["spacing_mm"] == [2.0, 2.0, 2.0]
    # the slice's second axis is A (axial) or S (coronal, sagittal): the network grid is canonical RAS
    res = neuralize(oblique_target, [context], model=UpperHalf(), card=CARD, plane=plane, align=False,
                    device="cpu", context_size=1)
    grid = np.array(res.report["network_grid"]["affine"])
    shape = res.report["network_grid"]["shape"]
    axis = {"axial": 1, "coronal": 2, "sagittal": 2}[plane]
    net = ras_of(oblique_target.grid_shape, oblique_target.affine) @ np.linalg.inv(grid)[:3, :3].T \
        + np.linalg.inv(grid)[:3, 3]
    expected = net[..., axis] >= shape[axis] // 2 - 0.5
    assert np.mean((res.prediction.data > 0) == expected) > 0.97


def test_2d_target(context):
    aff2 = affine((0.0, 0.0, 0.3), (1.3, 1.1, 3.0), (30.0, 30.0, 2.0))
    target = pair((40, 44, 1), aff2)[0]
    ctx = pair((36, 40), affine((0.0, 0.0, 0.1), (1.5, 1.5, 3.0), (33.0, 33.0, 2.0)), seed=2)
    res = neuralize(target, [ctx], model=MeanContext(), card=CARD, align=False, device="cpu")
    assert res.prediction.data.shape == (40, 44, 1) and res.prediction.same_grid(target)
    assert dice(res.prediction.data[..., 0] > 0, ellipsoids((40, 44), aff2) > 0) > 0.85
    assert res.report["plane"] == "native 2D" and len(res.report["network_grid"]["shape"]) == 2


def test_context_order_does_not_change_the_prediction(oblique_target, tiny):
    ctxs = [pair((24, 26, 18), affine((0.0, 0.0, 0.1 * i), (2.0, 2.0, 2.0), (30.0, 36.0, -25.0)), seed=i)
            for i in range(3)]
    kw = dict(model=tiny, card=CARD, align=False, device="cpu", context_size=3, batch_slices=5)
    a = neuralize(oblique_target, ctxs, **kw)
    b = neuralize(oblique_target, ctxs[::-1], **kw)
    np.testing.assert_allclose(a.probability.data, b.probability.data, atol=1e-5)
    assert not a.report["bootstrapped"]


@pytest.mark.parametrize("n", [1, 32])
def test_one_and_thirty_two_contexts(tiny, n):
    target = pair((20, 18, 10), affine((0.1, 0.0, 0.0), (2.0, 2.0, 2.0), (20.0, 18.0, -10.0)))[0]
    ctxs = [pair((18, 18, 10), affine((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (19.0, 17.0, -10.0)), seed=i % 4)
            for i in range(n)]
    res = neuralize(target, ctxs, model=tiny, card=CARD, align=False, device="cpu", seed=3)
    assert res.prediction.same_grid(target) and np.isfinite(res.probability.data).all()
    assert res.report["n_contexts"] == n and res.report["context_size"] == max(n, 4)
    assert res.report["bootstrapped"] == (n < 4)
    if n == 1:  # bootstrapping: the same seed gives the same prediction, another seed another one
        again = neuralize(target, ctxs, model=tiny, card=CARD, align=False, device="cpu", seed=3)
        other = neuralize(target, ctxs, model=tiny, card=CARD, align=False, device="cpu", seed=4)
        np.testing.assert_array_equal(res.probability.data, again.probability.data)
        assert not np.allclose(res.probability.data, other.probability.data)


def test_label_value_picks_one_label(oblique_target, context):
    label = context[1]
    one, two, anything = context_mask(label, 1), context_mask(label, 2), context_mask(label)
    np.testing.assert_array_equal(one.data, label.data == 1)
    np.testing.assert_array_equal(two.data, label.data == 2)
    np.testing.assert_array_equal(anything.data, label.data > 0)
    assert one.data.dtype == np.uint8 and one.is_label and one.data.sum() > two.data.sum() > 0
    with pytest.raises(InputError, match=r"label 5 does not occur.*labels present: 0, 1, 2"):
        context_mask(label, 5)
    with pytest.raises(InputError, match="empty"):
        context_mask(label.with_data(np.zeros_like(label.data)))
    kw = dict(model=MeanContext(), card=CARD, align=False, device="cpu", context_size=1)
    p1 = neuralize(oblique_target, [context], label_value=1, **kw).prediction.data > 0
    p2 = neuralize(oblique_target, [context], label_value=2, **kw).prediction.data > 0
    truth = ellipsoids(oblique_target.grid_shape, oblique_target.affine)
    assert dice(p1, truth == 1) > 0.85 and dice(p2, truth == 2) > 0.7 and not (p1 & p2).any()


def test_alignment_of_a_context_identical_to_the_target_is_the_identity(oblique_target):
    truth = ellipsoids(oblique_target.grid_shape, oblique_target.affine)
    same = (oblique_target, Volume(truth, oblique_target.affine, is_label=True))
    res = neuralize(oblique_target, [same], model=MeanContext(), card=CARD, device="cpu", context_size=1)
    a = np.array(res.report["contexts"][0]["registered_affine_ras"])
    np.testing.assert_allclose(a[:3, :3], np.eye(3), atol=0.05)  # Adam (lr 0.02) jitters about the optimum
    assert np.abs(a[:3, 3]).max() < 1.0  # mm
    assert res.report["contexts"][0]["correlation"] > 0.95 and res.report["warnings"] == []
    assert dice(res.prediction.data > 0, truth > 0) > 0.85
    # the same context moved by t (RAS mm): the affine (target point → context point) finds t and undoes it
    t = np.array([6.0, -4.0, 3.0])
    moved = np.eye(4)
    moved[:3, 3] = t
    shifted = tuple(Volume(v.data, moved @ v.affine, is_label=v.is_label) for v in same)
    kw = dict(model=MeanContext(), card=CARD, device="cpu", context_size=1)
    res, plain = neuralize(oblique_target, [shifted], **kw), neuralize(oblique_target, [shifted], align=False, **kw)
    a = np.array(res.report["contexts"][0]["registered_affine_ras"])
    np.testing.assert_allclose(a[:3, 3], t, atol=1.0)
    assert dice(plain.prediction.data > 0, truth > 0) < 0.75 < 0.85 < dice(res.prediction.data > 0, truth > 0)
    assert res.report["contexts"][0]["correlation"] > res.report["contexts"][0]["correlation_before"] + 0.1
    assert res.report["contexts"][0]["alignment_used"] and res.report["contexts"][0]["affine_ras"] == a.tolist()


def test_an_alignment_that_makes_things_worse_is_not_used(oblique_target, monkeypatch):
    import toporeg.neuralizer.inference as inference

    bad = np.eye(4)
    bad[:3, 3] = [15.0, 0.0, 0.0]
    monkeypatch.setattr(inference, "register", lambda *a, **k: type("Reg", (), {"affine_ras": bad})())
    truth = ellipsoids(oblique_target.grid_shape, oblique_target.affine)
    res = neuralize(oblique_target, [(oblique_target, Volume(truth, oblique_target.affine, is_label=True))],
                    model=MeanContext(), card=CARD, device="cpu", context_size=1)
    entry = res.report["contexts"][0]
    assert not entry["alignment_used"] and entry["affine_ras"] == np.eye(4).tolist()
    assert entry["correlation"] == entry["correlation_before"] > 0.99
    assert any("lowered its correlation" in w for w in res.report["warnings"])
    assert dice(res.prediction.data > 0, truth > 0) > 0.85


def test_image_task_prediction_is_in_the_context_outputs_units(oblique_target):
    img = np.asarray(oblique_target.data, np.float32)
    units = oblique_target.with_data(1000.0 * img + 200.0)  # an 'identity' task whose outputs are in other units
    res = neuralize(oblique_target, [(oblique_target, units)], model=MeanContext(), card=CARD, task="image",
                    align=False, device="cpu", context_size=1)
    assert res.probability is None and res.prediction.data.dtype == np.float32
    lo, hi = np.percentile(units.data, [0.5, 99.5])
    assert (res.report["output_units"]["lo"], res.report["output_units"]["hi"]) == pytest.approx((lo, hi))
    pred = res.prediction.data
    assert lo - 1e-3 <= pred.min() and pred.max() <= hi + 1e-3
    assert np.corrcoef(pred.ravel(), units.data.ravel())[0, 1] > 0.95
    assert np.median(np.abs(pred - units.data)) < 0.05 * (hi - lo)


def test_bad_inputs_give_clear_errors(oblique_target, context):
    kw = dict(model=MeanContext(), card=CARD, align=False, device="cpu")
    nan = np.array(oblique_target.data, np.float32)
    nan[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="target image: image contains 1 NaN"):
        neuralize(oblique_target.with_data(nan), [context], **kw)
    four_d = Volume(np.stack([oblique_target.data] * 2, -1), oblique_target.affine, has_channels=True)
    with pytest.raises(InputError, match="target image: expected a single-channel image, got 2 channels"):
        neuralize(four_d, [context], **kw)
    shifted = Volume(context[1].data, context[1].affine @ np.diag([1.0, 1.0, 1.5, 1.0]), is_label=True)
    with pytest.raises(InputError, match="context 1: its output .* is not on its image's grid"):
        neuralize(oblique_target, [(context[0], shifted)], **kw)
    with pytest.raises(InputError, match="label 7 does not occur"):
        neuralize(oblique_target, [context], label_value=7, **kw)
    with pytest.raises(InputError, match="context set is empty"):
        neuralize(oblique_target, [], **kw)
    with pytest.raises(InputError, match="context 1 is 2D but the target is 3D"):
        neuralize(oblique_target, [pair((20, 20), np.eye(4))], **kw)
    with pytest.raises(InputError, match="only applies to segment"):
        neuralize(oblique_target, [context], task="image", label_value=1, **kw)


def test_context_set_round_trip_with_relative_paths(tmp_path, context):
    data = tmp_path / "set" / "data"
    files = []
    for i in range(2):
        save_volume(context[0], data / f"img{i}.nii.gz")
        save_volume(context[1], data / f"lab{i}.nii.gz")
        files.append((data / f"img{i}.nii.gz", data / f"lab{i}.nii.gz"))
    cs = ContextSet("hippo", files, task="segment", label_value=2, plane="coronal")
    cs.save(tmp_path / "set" / "hippo.json")
    raw = json.loads((tmp_path / "set" / "hippo.json").read_text(encoding="utf-8"))
    assert raw["format"] == "toporeg-context-set/1"
    assert raw["pairs"][0] == {"image": "data/img0.nii.gz", "output": "data/lab0.nii.gz"}
    shutil.move(tmp_path / "set", tmp_path / "moved")  # relative paths survive moving the folder
    back = ContextSet.load(tmp_path / "moved" / "hippo.json")
    assert (back.name, back.task, back.label_value, back.plane) == ("hippo", "segment", 2, "coronal")
    assert [p.resolve() for p in back.pairs[1]] == [(tmp_path / "moved/data" / n).resolve()
                                                    for n in ("img1.nii.gz", "lab1.nii.gz")]
    vols = back.volumes()
    assert len(vols) == 2 and vols[0][1].is_label and vols[0][0].same_grid(context[0])
    (tmp_path / "moved/data/lab1.nii.gz").unlink()
    with pytest.raises(InputError, match="output of context pair 2 of context set 'hippo' not found") as err:
        ContextSet.load(tmp_path / "moved" / "hippo.json")
    assert "lab1.nii.gz" in str(err.value)
    ContextSet("empty", []).save(tmp_path / "empty.json")
    with pytest.raises(InputError, match="no context pairs of context set 'empty'"):
        ContextSet.load(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text('{"pairs": []}', encoding="utf-8")
    with pytest.raises(InputError, match="not a TopoReg context set"):
        ContextSet.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="context set file not found"):
        ContextSet.load(tmp_path / "nothing.json")
