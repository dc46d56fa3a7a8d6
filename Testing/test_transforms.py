"""Known answers for the spatial-transform core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_blobs, smooth_velocity
from toporeg.transforms import (affine_displacement, compose, folding_fraction, identity_grid, integrate_svf,
                                invert_svf, jacobian_determinant, resize_displacement, warp, warp_labels)


@pytest.mark.parametrize("shape", [(17, 23), (9, 12, 11)])
def test_identity_field_is_exact_identity(shape):
    img = torch.from_numpy(smooth_blobs(shape))[None, None]
    out = warp(img, torch.zeros(1, len(shape), *shape))
    # grid_sample's [-1, 1] normalisation costs at most float32 rounding (~1 ulp); labels are exact
    assert (out - img).abs().max() <= 2e-6 * img.abs().max()
    labels = (img * 5).to(torch.int64)
    assert torch.equal(warp_labels(labels, torch.zeros(1, len(shape), *shape)), labels)


@pytest.mark.parametrize("shape,shift", [((20, 18), (3, -2)), ((12, 14, 10), (2, 0, -3))])
def test_integer_translation_moves_content_exactly(shape, shift):
    img = torch.from_numpy(smooth_blobs(shape))[None, None]
    disp = torch.zeros(1, len(shape), *shape)
    for c, s in enumerate(shift):
        disp[:, c] = s
    out = warp(img, disp)
    # warped(x) = img(x + shift) wherever x + shift is inside the grid
    src = tuple(slice(max(s, 0), n + min(s, 0)) for s, n in zip(shift, shape))
    dst = tuple(slice(max(-s, 0), n - max(s, 0)) for s, n in zip(shift, shape))
    assert torch.allclose(out[(0, 0) + dst], img[(0, 0) + src], atol=1e-5)


def test_label_warp_keeps_values_and_dtype():
    labels = torch.zeros(1, 1, 10, 10, dtype=torch.int64)
    labels[..., 2:5, 3:7] = 7
    disp = torch.full((1, 2, 10, 10), 0.4)
    out = warp_labels(labels, disp)
    assert out.dtype == torch.int64
    assert set(out.unique().tolist()) <= {0, 7}


@pytest.mark.parametrize("shape", [(16, 16), (10, 12, 8)])
def test_zero_svf_integrates_to_identity(shape):
    v = torch.zeros(1, len(shape), *shape)
    assert torch.equal(integrate_svf(v, steps=7), v)


def test_constant_svf_integrates_to_translation():
    v = torch.zeros(1, 2, 24, 24)
    v[:, 0] = 1.5
    u = integrate_svf(v, steps=6)
    assert torch.allclose(u[..., 4:-4, 4:-4], v[..., 4:-4, 4:-4], atol=1e-4)


@pytest.mark.parametrize("shape", [(40, 40), (24, 24, 24)])
def test_exp_v_composed_with_exp_minus_v_is_identity(shape):
    v = smooth_velocity(shape, magnitude=3.0, seed=1)
    fwd, bwd = integrate_svf(v), invert_svf(v)
    residual = compose(fwd, bwd)  # φ ∘ φ⁻¹ - id
    interior = (slice(None), slice(None)) + tuple(slice(4, -4) for _ in shape)
    assert residual[interior].abs().max() < 0.1


def test_jacobian_of_affine_field_equals_its_determinant():
    m = np.array([[1.1, 0.2, -0.1, 2.0], [0.05, 0.9, 0.1, -1.0], [0.0, -0.15, 1.2, 0.5], [0, 0, 0, 1]])
    disp = affine_displacement(m, (10, 11, 12), dtype=torch.float64)
    det = jacobian_determinant(disp)
    assert torch.allclose(det, torch.full_like(det, np.linalg.det(m[:3, :3])), atol=1e-10)


def test_jacobian_2d_affine_and_sign():
    m = np.array([[0.8, 0.3, 0.0], [-0.2, 1.3, 0.0], [0, 0, 1]])
    det = jacobian_determinant(affine_displacement(m, (8, 9), dtype=torch.float64))
    assert torch.allclose(det, torch.full_like(det, np.linalg.det(m[:2, :2])))
    flip = np.diag([-1.0, 1.0, 1.0])  # a reflection: orientation-reversing, det = -1 (not |.|)
    det = jacobian_determinant(affine_displacement(flip, (8, 9), dtype=torch.float64))
    assert torch.allclose(det, -torch.ones_like(det))
    assert folding_fraction(det) == 1.0


def test_folding_fraction_counts_only_folded_voxels_inside_mask():
    det = torch.ones(1, 10, 10)
    det[0, :2] = -0.5
    assert folding_fraction(det) == pytest.approx(0.2)
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 5:] = True
    assert folding_fraction(det, mask) == 0.0


def test_smooth_svf_is_diffeomorphic():
    v = smooth_velocity((32, 32, 32), magnitude=4.0, seed=3)
    det = jacobian_determinant(integrate_svf(v))
    assert det.min() > 0


def test_resize_displacement_rescales_values():
    disp = affine_displacement(np.diag([1.2, 1.0, 1.0]), (9, 9), dtype=torch.float64)
    up = resize_displacement(disp, (17, 17))
    expected = affine_displacement(np.diag([1.2, 1.0, 1.0]), (17, 17), dtype=torch.float64)
    assert torch.allclose(up, expected, atol=1e-10)


def test_identity_grid_order():
    grid = identity_grid((3, 4, 5))
    assert grid.shape == (1, 3, 3, 4, 5)
    assert grid[0, 0, 2, 1, 4] == 2 and grid[0, 1, 2, 1, 4] == 1 and grid[0, 2, 2, 1, 4] == 4


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 6)])
def test_box_mean_matches_direct_sum_and_is_self_adjoint(shape):
    from toporeg.filters import box_mean

    x = torch.randn(1, 2, *shape, dtype=torch.float64, requires_grad=True)
    out = box_mean(x, 3)
    padded = torch.nn.functional.pad(x, [1] * (2 * len(shape)))
    idx = (0, 1) + tuple(n // 2 for n in shape)
    window = padded[(0, 1) + tuple(slice(i, i + 3) for i in idx[2:])]
    assert torch.allclose(out[idx], window.mean())
    assert torch.autograd.gradcheck(lambda t: box_mean(t, 3), (x,))
