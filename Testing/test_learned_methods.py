"""The learned-registration inference paths (DIO, CARL) end to end: known answers from analytic stand-in models,
prompts, instance optimisation that leaves the caller's weights alone (options and CLI: test_learned_methods_cli.py).

Geometry conventions (shared/CONVENTIONS.md): x_moving = x_fixed + u(x_fixed), u in RAS mm on the fixed grid
(`displacement_ras`), the inverse on the moving grid; displacement files in LPS mm.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learned_fixtures import CARD_GRID, FIXED_AFFINE, SHAPE, SHIFT_MM, TINY_CARL, blobs, interior, ras_grid, values_at

from toporeg.carl import CARL
from toporeg.carl.inference import carl_register, instance_optimise, inverse_consistency
from toporeg.dio import DIOFeatureNet, level_shape
from toporeg.dio.inference import dio_register, solver_settings
from toporeg.errors import InputError
from toporeg.filters import downsample
from toporeg.io import Volume, load_volume
from toporeg.registration import preset
from toporeg.transforms import physical_from_itk_volume


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):  # conftest: the solver's thousands of tiny ops are fastest on one thread
    yield


# --- DIO -----------------------------------------------------------------------------------------------------

class _ImagePyramidFeatures(DIOFeatureNet):
    """features = the image itself at each scale, an analytic stand-in so the solver's answer is known."""

    def __init__(self):
        super().__init__(ndim=2, channels=1, encoder=(4, 4, 4), decoder=(4, 4, 4), final_convs=(4,),
                         scales=(4, 2, 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = [downsample(image, s) for s in self.scales]
        assert [tuple(f.shape[2:]) for f in out] == [level_shape(image.shape[2:], s) for s in self.scales]
        return out


class _ConstantFeatures(_ImagePyramidFeatures):
    """features carrying no information (ones at every scale): only a prompt can move the solver."""

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [torch.ones_like(f) for f in super().forward(image)]


DIO_CARD = {"name": "analytic_dio", "input_domain": CARD_GRID, "solver": {"iterations": [30, 20, 10]}}


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[Volume, Volume]:
    """moving = fixed translated by SHIFT_MM: moving(p + shift) = fixed(p), so u = +shift everywhere."""
    return blobs(SHAPE, FIXED_AFFINE), blobs(SHAPE, FIXED_AFFINE, SHIFT_MM)


@pytest.mark.parametrize("transform", ["svf", "affine"])
def test_dio_recovers_a_translation_on_the_native_grid(shifted_pair, transform):
    fixed, moving = shifted_pair
    res = dio_register(fixed, moving, _ImagePyramidFeatures(), card=DIO_CARD, prealign="none", transform=transform,
                       device="cpu")
    assert res.displacement_ras.shape == SHAPE + (3,) and res.warped.grid_shape == SHAPE
    inside = interior(fixed)
    u = res.displacement_ras[inside][:, :2]
    assert np.median(np.linalg.norm(u - SHIFT_MM, axis=-1)) < 0.5
    # no systematic error (a wrong axis, sign or spacing on the way back to the native grid would show here)
    assert np.abs(np.median(u, axis=0) - SHIFT_MM).max() < 0.3, np.median(u, axis=0)
    assert np.abs(res.displacement_ras[..., 2]).max() < 1e-4          # a 2D registration stays in its plane
    assert res.folding_fraction == 0.0
    # the inverse, on the moving grid, undoes it: moving point q ↦ q − shift
    moved_inside = interior(moving, 10.0)
    inv_err = np.linalg.norm(res.inverse_displacement_ras[moved_inside][:, :2] + SHIFT_MM, axis=-1)
    assert np.median(inv_err) < 0.6
    assert res.similarity_after < res.similarity_before                # lncc is a loss: lower is better
    assert res.settings["method"] == "dio" and res.settings["prealign"] == "none"
    assert res.settings["solver"]["transform"] == transform and res.settings["solver"]["iterations"] == [30, 20, 10]


def test_dio_free_form_displacement_runs_and_moves_the_right_way(shifted_pair):
    fixed, moving = shifted_pair
    res = dio_register(fixed, moving, _ImagePyramidFeatures(), card=DIO_CARD, prealign="none",
                       transform="displacement", iterations=(10, 5, 5), device="cpu")
    assert np.all(np.isfinite(res.displacement_ras)) and res.inverse_displacement_ras is not None
    assert res.settings["solver"]["transform"] == "displacement" and res.settings["solver_iterations"][0] <= 10
    med = np.median(res.displacement_ras[interior(fixed)][:, :2], axis=0)
    assert np.linalg.norm(med - SHIFT_MM) < 1.0, med


def test_solver_settings_take_the_card_and_the_users_caps():
    s = solver_settings({"solver": {"iterations": [30, 20, 10], "lr": 0.25}})
    assert s.transform == "svf" and s.iterations == (30, 20, 10) and s.lr == 0.25   # svf: the inference default
    s = solver_settings({"solver": {"iterations": [30, 20, 10]}}, transform="affine", iterations=(3, 2, 1))
    assert s.transform == "affine" and s.iterations == (3, 2, 1)
    with pytest.raises(InputError, match="3 scales"):
        solver_settings({"solver": {"iterations": [30, 20, 10]}}, iterations=(5, 5))
    with pytest.raises(InputError, match="no transform 'rigid'"):
        solver_settings({}, transform="rigid")


def test_dio_landmark_prompt_pulls_the_solution_to_the_user_correspondence():
    fixed, moving = blobs(SHAPE, FIXED_AFFINE), blobs(SHAPE, FIXED_AFFINE)
    # landmarks on fixed voxel centres; the user says: they sit 4 mm right and 3 mm posterior in the moving image
    ijk = np.array([[8, 12, 0], [22, 12, 0], [10, 28, 0], [21, 27, 0], [15, 20, 0]], float)
    pts_f = fixed.voxel_to_ras(ijk)
    pts_m = pts_f + np.array([4.0, -3.0, 0.0])
    model = _ConstantFeatures()
    plain = dio_register(fixed, moving, model, card=DIO_CARD, prealign="none", transform="affine", device="cpu")
    prompted = dio_register(fixed, moving, model, card=DIO_CARD, prealign="none", transform="affine", device="cpu",
                            prompt_points=(pts_f, pts_m))

    def landmark_error(res) -> float:
        mapped = pts_f + values_at(res.displacement_ras, fixed, pts_f)
        return float(np.linalg.norm(mapped - pts_m, axis=-1).mean())

    assert landmark_error(plain) == pytest.approx(5.0, abs=1e-3)       # no information: the solver stays put
    assert landmark_error(prompted) < 0.2 * landmark_error(plain), landmark_error(prompted)
    assert prompted.settings["prompts"]["landmarks"] == 5 and plain.settings["prompts"]["landmarks"] == 0
    with pytest.raises(InputError, match="as many fixed as moving"):
        dio_register(fixed, moving, model, card=DIO_CARD, prealign="none", device="cpu",
                     prompt_points=(pts_f, pts_m[:3]))
    # after a pre-alignment T (here a given 2 mm / 1 mm translation), moving landmarks are taken through T⁻¹:
    # the result still maps each fixed landmark onto its moving partner, and without prompts u = T's shift
    initial = np.eye(4)
    initial[:3, 3] = [2.0, 1.0, 0.0]
    kw = dict(card=DIO_CARD, prealign="none", transform="affine", device="cpu", initial_transform=initial)
    plain = dio_register(fixed, moving, model, **kw)
    np.testing.assert_allclose(plain.displacement_ras[..., :2].reshape(-1, 2), np.tile([2.0, 1.0], (np.prod(SHAPE), 1)),
                               atol=1e-3)
    prompted = dio_register(fixed, moving, model, prompt_points=(pts_f, pts_m), **kw)
    assert landmark_error(prompted) < 0.2 * landmark_error(plain), landmark_error(prompted)


def test_dio_affine_landmark_prompt_on_a_two_scale_model_reaches_the_landmarks():
    fixed = blobs(SHAPE, FIXED_AFFINE)
    blank = _ConstantFeatures()
    blank.scales = [2, 1]                                  # two feature levels, as a two-stage encoder gives
    card = {"input_domain": CARD_GRID, "solver": {"iterations": [30, 20]}}
    pts_f = fixed.voxel_to_ras(np.array([[8, 12, 0], [22, 12, 0], [10, 28, 0], [21, 27, 0]], float))
    res = dio_register(fixed, fixed, blank, card=card, prealign="none", transform="affine", device="cpu",
                       prompt_points=(pts_f, pts_f + [4.0, -3.0, 0.0]), landmark_weight=1.0)
    err = np.linalg.norm(values_at(res.displacement_ras, fixed, pts_f) - [4.0, -3.0, 0.0], axis=-1)
    assert err.max() < 1.0, (err, res.settings["solver_iterations"])


def _disk(vol: Volume, centre, radius) -> Volume:
    ras = ras_grid(vol.grid_shape, vol.affine)[..., :2]
    inside = ((ras - np.asarray(centre)) ** 2).sum(-1) <= radius**2
    return Volume(inside.astype(np.uint8) * 3, vol.affine, is_label=True)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_dio_label_prompt_pulls_the_labels_into_overlap():
    fixed = blobs(SHAPE, FIXED_AFFINE)
    moving_affine = FIXED_AFFINE.copy()
    moving_affine[:3, 3] += [1.0, -0.5, 0.0]          # labels on their own (moving) grid, not the fixed one
    moving = blobs(SHAPE, moving_affine)
    fixed_labels = _disk(fixed, (0.0, 0.0), 9.0)
    moving_labels = _disk(moving, (4.0, -3.0), 9.0)  # the structure sits (4, −3) mm away in the moving image
    model = _ConstantFeatures()
    initial = np.eye(4)
    initial[:3, 3] = [3.0, 3.0, 0.0]              # a given pre-alignment: the moving labels are read through it
    runs = {}
    for name, prompt in (("plain", None), ("prompted", (fixed_labels, moving_labels))):
        runs[name] = dio_register(fixed, moving, model, card=DIO_CARD, prealign="none", transform="svf",
                                  device="cpu", prompt_labels=prompt, label_weight=1.0, initial_transform=initial)
    dice = {k: _dice(r.warp_volume(moving_labels).data, fixed_labels.data) for k, r in runs.items()}
    assert dice["plain"] < 0.75 and dice["prompted"] > dice["plain"] + 0.15, dice
    centre = values_at(runs["prompted"].displacement_ras, fixed, np.array([[0.0, 0.0, 5.0]]))[0, :2]
    assert np.linalg.norm(centre - [4.0, -3.0]) < 1.5, centre
    assert runs["prompted"].folding_fraction == 0.0 and runs["prompted"].settings["prompts"]["labels"]


# --- CARL ----------------------------------------------------------------------------------------------------

CARL_CARD = {"name": "tiny_carl", "input_domain": CARD_GRID}


class _ConstantPairCARL(CARL):
    """A CARL whose forward_pair returns constant displacements (model-grid voxels): φ_AB = t, φ_BA = `back`."""

    def __init__(self, t, back):
        super().__init__(**TINY_CARL)
        self.t, self.back = torch.tensor(t, dtype=torch.float32), torch.tensor(back, dtype=torch.float32)

    def forward_pair(self, moving, fixed, *, depth=3):
        shape = (1, 2, *fixed.shape[2:])
        return self.t.view(1, 2, 1, 1).expand(shape).clone(), self.back.view(1, 2, 1, 1).expand(shape).clone()


@pytest.fixture(scope="module")
def carl_pair() -> tuple[Volume, Volume]:
    moving_affine = np.array([[1.3, 0.0, 0.0, -22.0], [0.0, -1.7, 0.0, 25.0], [0.0, 0.0, 2.0, 5.0], [0, 0, 0, 1.0]])
    return blobs(SHAPE, FIXED_AFFINE), blobs((30, 34), moving_affine, (2.0, 1.0))


def test_carl_constant_fields_map_to_the_native_grids_in_mm(carl_pair):
    fixed, moving = carl_pair
    t = (1.5, -0.75)                                   # model-grid voxels of 2 mm
    res = carl_register(fixed, moving, _ConstantPairCARL(t, (-1.5, 0.75)), card=CARL_CARD, device="cpu")
    expected = np.array([3.0, -1.5, 0.0])              # model axes are +R, +A although fixed i runs to the left
    assert res.displacement_ras.shape == SHAPE + (3,)
    np.testing.assert_allclose(res.displacement_ras.reshape(-1, 3), np.tile(expected, (np.prod(SHAPE), 1)), atol=1e-3)
    assert res.inverse_displacement_ras.shape == moving.grid_shape + (3,)
    np.testing.assert_allclose(res.inverse_displacement_ras.reshape(-1, 3),
                               np.tile(-expected, (np.prod(moving.grid_shape), 1)), atol=1e-3)
    icon = res.maps["inverse_consistency"]
    assert icon.grid_shape == SHAPE and float(np.abs(icon.data).max()) < 1e-4
    summary = res.summary()
    assert summary["inverse_consistency_mean_mm"] == pytest.approx(0.0, abs=1e-4)
    assert res.settings["method"] == "carl" and res.settings["prealign"] == "none" and res.folding_fraction == 0.0
    assert res.affine_ras == pytest.approx(np.eye(4))                 # prealign none: no linear part


def test_carl_after_affine_prealignment_composes_the_network_field_with_it(shifted_pair):
    """u(x) = T(x + t·2 mm) − x: the constant network field acts on the model grid, then T (fixed → moving)."""
    fixed, moving = shifted_pair
    t = np.array([0.5, 1.0])
    res = carl_register(fixed, moving, _ConstantPairCARL(t, -t), card=CARL_CARD, prealign="affine",
                        affine_settings=preset("fast"), device="cpu")
    T = res.affine_ras
    assert np.abs(T[:2, 3] - SHIFT_MM).max() < 0.5 and np.abs(T[:3, :3] - np.eye(3)).max() < 0.05  # engine's
    x = ras_grid(SHAPE, FIXED_AFFINE)
    expected = (x + np.r_[2.0 * t, 0.0]) @ T[:3, :3].T + T[:3, 3] - x
    np.testing.assert_allclose(res.displacement_ras, expected, atol=1e-3)
    q = ras_grid(moving.grid_shape, moving.affine)                      # inverse: T⁻¹q − t·2 mm − q
    inv = np.linalg.inv(T)
    np.testing.assert_allclose(res.inverse_displacement_ras, q @ inv[:3, :3].T + inv[:3, 3] - np.r_[2.0 * t, 0.0] - q,
                               atol=1e-3)
    assert res.settings["prealign"] == "affine" and "affine" in res.timings


def test_carl_inverse_consistency_measures_a_pair_that_is_not_inverse(carl_pair, tmp_path):
    fixed, moving = carl_pair
    res = carl_register(fixed, moving, _ConstantPairCARL((1.5, -2.0), (0.0, 0.0)), card=CARL_CARD, device="cpu")
    icon = np.asarray(res.maps["inverse_consistency"].data)
    np.testing.assert_allclose(icon, 2.5 * 2.0, atol=1e-3)          # |t| = 2.5 voxels of 2 mm
    assert res.summary()["inverse_consistency_mean_mm"] == pytest.approx(5.0, abs=1e-3)
    written = res.save(tmp_path)
    assert written["inverse_consistency"] == "inverse_consistency.nii.gz"
    saved = load_volume(tmp_path / "inverse_consistency.nii.gz")
    assert saved.grid_shape == SHAPE and np.allclose(saved.data, 5.0, atol=1e-3)
    itk = res.displacement_volume()                                   # the ITK field: the same u, in LPS
    np.testing.assert_allclose(np.asarray(itk.data).reshape(-1, 2), np.tile([-3.0, 4.0], (np.prod(SHAPE), 1)),
                               atol=1e-3)
    np.testing.assert_allclose(physical_from_itk_volume(itk)[..., :2].reshape(-1, 2),
                               np.tile([3.0, -4.0], (np.prod(SHAPE), 1)), atol=1e-3)


def test_carl_inverse_consistency_is_in_mm_on_an_anisotropic_model_grid(carl_pair):
    fixed, moving = carl_pair
    card = {"name": "aniso", "input_domain": {"shape": [24, 16], "spacing_mm": [2.0, 3.0]}}
    res = carl_register(fixed, moving, _ConstantPairCARL((1.0, 0.5), (0.0, 0.0)), card=card, device="cpu")
    np.testing.assert_allclose(res.displacement_ras[..., :2].reshape(-1, 2), np.tile([2.0, 1.5], (np.prod(SHAPE), 1)),
                               atol=1e-3)
    # |u_AB + u_BA∘φ_AB| = |(2, 1.5)| mm = 2.5 mm
    np.testing.assert_allclose(np.asarray(res.maps["inverse_consistency"].data), 2.5, atol=1e-3)


def test_inverse_consistency_of_exact_and_inexact_pairs():
    t = torch.tensor([1.25, -0.5]).view(1, 2, 1, 1).expand(1, 2, 8, 9)
    assert float(inverse_consistency(t, -t).abs().max()) < 1e-6
    np.testing.assert_allclose(inverse_consistency(t, torch.zeros_like(t)).numpy(), np.hypot(1.25, 0.5), atol=1e-6)
    np.testing.assert_allclose(inverse_consistency(t, torch.zeros_like(t), [2.0, 4.0]).numpy(), np.hypot(2.5, 2.0),
                               atol=1e-6)                                 # mm: each axis scaled before the norm
    # u_BA is read where φ_AB lands: a BA field that is −t only on the right half cancels there only
    ab, ba = torch.zeros(1, 2, 8, 9), torch.zeros(1, 2, 8, 9)
    ab[:, 0] = 1.0                                                    # every row i lands on row i + 1 ...
    ba[:, 0, 4:] = -1.0                                               # ... which maps back from rows 4 on only
    gap = inverse_consistency(ab, ba)[0, 0]
    assert float(gap[3:].abs().max()) < 1e-6 and float((gap[:3] - 1.0).abs().max()) < 1e-6   # row 3: via row 4


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_carl_instance_optimisation_tunes_a_copy_and_leaves_the_model_alone(carl_pair):
    fixed, moving = carl_pair
    torch.manual_seed(0)
    model = CARL(**TINY_CARL).eval()
    before = _state(model)
    res = carl_register(fixed, moving, model, card=CARL_CARD, refine=2, device="cpu")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert np.all(np.isfinite(res.displacement_ras)) and np.all(np.isfinite(res.inverse_displacement_ras))
    assert res.settings["refine_steps"] == 2 and res.settings["refine_lr"] > 0
    img_f, img_m = (torch.as_tensor(np.asarray(v.data))[None, None, :24, :24] for v in (fixed, moving))
    tuned = instance_optimise(model, img_m, img_f, 3, depth=3, lam=1.5, sigma=2.0, lr=1e-3)
    assert tuned is not model and not tuned.training
    original = dict(model.named_parameters())
    changed = [k for k, p in tuned.named_parameters() if not torch.equal(p.detach(), original[k])]
    assert any(k.startswith("network.second.") for k in changed), changed      # Ψ2 (full resolution) was tuned
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_card_grid_of_the_wrong_dimension_is_refused(carl_pair):
    fixed, moving = carl_pair
    card = {"input_domain": {"shape": [24, 24, 24], "spacing_mm": [2.0, 2.0, 2.0]}}
    with pytest.raises(InputError, match="3D but the images are 2D"):
        carl_register(fixed, moving, _ConstantPairCARL((0.0, 0.0), (0.0, 0.0)), card=card, device="cpu")


def test_carl_refuses_wrong_models_and_dimensions(carl_pair):
    fixed, moving = carl_pair
    with pytest.raises(InputError, match="needs a CARL model"):
        carl_register(fixed, moving, _ImagePyramidFeatures(), card=CARL_CARD, device="cpu")
    with pytest.raises(InputError, match="3D but the images are 2D"):
        carl_register(fixed, moving, CARL(ndim=3, channels=4, blocks=1, pad=3, unet_encoder=(4, 8), unet_final=(4,)),
                      card=CARL_CARD, device="cpu")
    with pytest.raises(InputError, match="needs a DIOFeatureNet model"):
        dio_register(fixed, moving, CARL(**TINY_CARL), card=DIO_CARD, device="cpu")
