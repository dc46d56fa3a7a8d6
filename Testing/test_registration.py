"""Optimisation engine: known translations/affines/SVFs are recovered; masks, cancel and bad input behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import phantom as _phantom
from conftest import smooth_velocity
from conftest import textured_phantom as _textured
from toporeg.errors import CancelledError, InputError
from toporeg.geometry import resample_to
from toporeg.io import Volume
from toporeg.progress import CancelToken, Progress
from toporeg.registration import RegistrationSettings, register
from toporeg.transforms import (integrate_svf, jacobian_determinant, rotation_matrix,
                                voxel_displacement_from_physical, warp)

QUICK = dict(affine_levels=(2, 1), affine_iterations=(60, 40), levels=(2, 1), iterations=(60, 40),
             field_factor=1, ncc_window=5, early_stop_window=15)


def _moved(fixed: Volume, transform: np.ndarray) -> Volume:
    """Moving image on the fixed grid such that moving(T x) = fixed(x), i.e. φ = T."""
    return resample_to(fixed, fixed, transform=np.linalg.inv(transform))


def test_recovers_known_translation_3d():
    fixed = Volume(_phantom((40, 44, 36)), np.diag([2.0, 2.0, 2.5, 1.0]))
    t = np.eye(4)
    t[:3, 3] = [3.4, -2.6, 2.0]                    # mm, ~1.5 voxels
    moving = _moved(fixed, t)
    result = register(fixed, moving, RegistrationSettings(transform="rigid", **QUICK), device="cpu")
    err_vox = np.abs(result.affine_ras[:3, 3] - t[:3, 3]) / fixed.spacing
    assert err_vox.max() < 0.5
    centre = tuple(n // 2 for n in fixed.grid_shape)
    assert np.abs(result.displacement_ras[centre] - t[:3, 3]).max() / 2.0 < 0.5


def test_recovers_known_affine_2d_on_different_grids():
    fixed = Volume(_phantom((72, 64), seed=3), np.diag([1.0, 1.2, 1.0, 1.0]))
    t = np.eye(4)
    t[:3, :3] = rotation_matrix([0, 0, np.deg2rad(6)]) @ np.diag([1.06, 0.96, 1.0])
    centre = fixed.voxel_to_ras([36, 32, 0])
    t[:3, 3] = centre - t[:3, :3] @ centre + [2.0, -1.5, 0]
    aff_m = np.diag([0.9, 0.9, 1.0, 1.0])
    aff_m[:3, 3] = [-3.0, 2.0, 0.0]
    moving = resample_to(fixed, Volume(np.zeros((86, 90), np.float32), aff_m), transform=np.linalg.inv(t))
    result = register(fixed, moving, RegistrationSettings(transform="affine", similarity="mse", **QUICK), device="cpu")
    ident = np.indices(fixed.grid_shape).reshape(2, -1).T
    pts = fixed.voxel_to_ras(np.c_[ident, np.zeros(len(ident))])
    true_u = pts @ t[:3, :3].T + t[:3, 3] - pts
    err = np.linalg.norm(result.displacement_ras.reshape(-1, 3) - true_u, axis=1)
    inside = (_phantom((72, 64), seed=3) > 0.1).ravel()
    assert np.percentile(err[inside], 95) < 0.5 * 1.0
    # the Jacobian map equals det(linear part) and the one implementation applied to the physical field
    det_phys = jacobian_determinant(torch.as_tensor(
        voxel_displacement_from_physical(result.displacement_ras, fixed.affine, 2))[None])[0].numpy()
    np.testing.assert_allclose(result.jacobian.data, det_phys, atol=1e-3)
    np.testing.assert_allclose(np.median(result.jacobian.data), np.linalg.det(t[:2, :2]), atol=0.02)


@pytest.mark.parametrize("shape,magnitude,similarity", [((64, 64), 8.0, "mse"), ((64, 64), 8.0, "lncc"),
                                                         ((32, 32, 32), 6.0, "mse"), ((32, 32, 32), 6.0, "lncc")])
def test_recovers_known_smooth_svf(shape, magnitude, similarity):
    fixed_img = _textured(shape, seed=7)
    v = smooth_velocity(shape, magnitude=magnitude, seed=11, sigma=8.0).double()
    true_u = integrate_svf(v)
    moving_img = warp(torch.from_numpy(fixed_img)[None, None].double(), integrate_svf(-v))[0, 0].numpy()
    fixed = Volume(fixed_img, np.eye(4))
    moving = Volume(moving_img.astype(np.float32), np.eye(4))
    reg = 0.05 if similarity == "mse" else 0.5            # MSE values are ~10x smaller than 1 − LNCC²
    settings = RegistrationSettings(transform="svf", similarity=similarity, regularization=reg, learning_rate=0.5,
                                    **{**QUICK, "iterations": (150, 100)})
    result = register(fixed, moving, settings, device="cpu")
    grid = torch.from_numpy(np.indices(shape).astype(float))
    est = result.moving_coords[0].double() - grid
    # score where the true mapping stays inside the grid: content pushed out cannot be recovered
    target = grid + true_u[0]
    valid = torch.ones(shape, dtype=torch.bool)
    for axis, n in enumerate(shape):
        valid &= (target[axis] >= 1) & (target[axis] <= n - 2) & (grid[axis] >= 2) & (grid[axis] <= n - 3)
    err = (est - true_u[0]).norm(dim=0)[valid].numpy()
    before = true_u[0].norm(dim=0)[valid].numpy()
    assert before.mean() > 0.6                           # a deformation worth recovering
    assert np.percentile(err, 95) < 1.0 and err.mean() < 0.5 * before.mean()
    assert result.folding_fraction == 0.0
    assert result.inverse_displacement_ras is not None


def test_fixed_mask_excludes_an_artefact():
    base = _phantom((48, 48), seed=5)
    fixed_img = base.copy()
    fixed_img[30:46, 30:46] = 3.0                   # bright artefact only in the fixed image
    t = np.eye(4)
    t[:3, 3] = [2.0, -2.0, 0.0]
    fixed = Volume(fixed_img, np.eye(4))
    moving = _moved(Volume(base, np.eye(4)), t)
    mask = np.ones((48, 48), np.uint8)
    mask[28:, 28:] = 0
    settings = RegistrationSettings(transform="rigid", similarity="mse", **QUICK)
    masked = register(fixed, moving, settings, fixed_mask=Volume(mask, np.eye(4), is_label=True), device="cpu")
    plain = register(fixed, moving, settings, device="cpu")
    err_masked = np.abs(masked.affine_ras[:3, 3] - t[:3, 3]).max()
    err_plain = np.abs(plain.affine_ras[:3, 3] - t[:3, 3]).max()
    assert err_masked < 0.3 and err_masked < err_plain
    assert masked.folding_region == "fixed mask"


def test_cancellation_stops_within_one_iteration():
    fixed = Volume(_phantom((40, 40), seed=1), np.eye(4))
    moving = Volume(_phantom((40, 40), seed=2), np.eye(4))
    token = CancelToken()
    calls = []

    def callback(stage, fraction, message):
        calls.append(message)
        if len(calls) == 5:
            token.cancel()

    with pytest.raises(CancelledError):
        register(fixed, moving, RegistrationSettings(**QUICK), progress=Progress(callback, token), device="cpu")
    assert len(calls) == 5


def test_bad_inputs_give_clear_errors():
    img = Volume(_phantom((20, 20, 20)), np.eye(4))
    far = np.eye(4)
    far[:3, 3] = [500.0, 0, 0]
    with pytest.raises(InputError, match="do not overlap"):
        register(img, Volume(img.data, far), device="cpu")
    with pytest.raises(InputError, match="2D moving image to a 3D fixed"):
        register(img, Volume(img.data[:, :, 0], np.eye(4)), device="cpu")
    with pytest.raises(InputError, match="fixed mask is empty"):
        register(img, img, fixed_mask=Volume(np.zeros((20, 20, 20), np.uint8), np.eye(4), is_label=True), device="cpu")
    with pytest.raises(InputError, match="constant"):
        register(img, Volume(np.ones((20, 20, 20), np.float32), np.eye(4)), device="cpu")
    nan = img.data.copy()
    nan[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register(img, Volume(nan, np.eye(4)), device="cpu")
    with pytest.raises(InputError, match="unknown similarity"):
        register(img, img, RegistrationSettings(similarity="cosine"), device="cpu")


def test_identical_images_give_identity_and_nmi_runs():
    img = Volume(_phantom((32, 32, 24)), np.diag([1.5, 1.5, 2.0, 1.0]))
    result = register(img, img, RegistrationSettings(similarity="nmi", **QUICK), device="cpu")
    assert np.linalg.norm(result.displacement_ras, axis=-1).max() < 1.0
    assert result.folding_fraction == 0.0
