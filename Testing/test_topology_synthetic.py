"""Synthetic topological changes (issue #5): exact masks, reproducibility, 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toporeg.topology import synthetic as syn
from toporeg.transforms.jacobian import jacobian_determinant
from toporeg.transforms.sampling import warp

SHAPES = [(40, 48), (24, 28, 22)]
CACHE = Path(__file__).resolve().parents[1] / ".bench-cache" / "toporeg_templates_2mm.npz"


def phantom_brain(shape, seed=0):
    """(image, brain mask, tissue) numpy: ellipsoid brain, GM shell, WM core, a central CSF 'ventricle' column
    along the last axis (so every axial slice has one), texture."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids)) / 0.85
    r_plane = np.sqrt(grids[0] ** 2 + grids[1] ** 2) / 0.85
    brain = r < 1
    tissue = np.where(r_plane < 0.25, 1, np.where(r < 0.7, 3, 2)) * brain
    lut = np.array([0.0, 0.25, 0.6, 0.9])
    texture = 0.03 * np.random.default_rng(seed).standard_normal(shape)
    image = (lut[tissue] + texture * brain).clip(0, 1).astype(np.float32)
    return image, brain.astype(np.uint8), tissue.astype(np.uint8)


def _t(x):
    return torch.as_tensor(x, dtype=torch.float32)[None, None]


def _assert_unchanged_outside(new, old, mask):
    assert mask.dtype == torch.bool and mask.shape == new.shape == old.shape
    assert bool(mask.any())
    assert torch.equal(new[~mask], old[~mask])


@pytest.mark.parametrize("shape", SHAPES)
def test_lesion_without_mass_effect_changes_only_the_mask(shape):
    image, brain, _ = phantom_brain(shape)
    new, mask, disp = syn.insert_lesion(image, brain, 0, radius=(2.0, 4.0), mass_effect=0.0)
    _assert_unchanged_outside(new, _t(image), mask)
    assert not bool(mask[_t(brain) == 0].any())
    assert disp.shape == (1, len(shape), *shape) and not bool(disp.any())
    assert not torch.equal(new[mask], _t(image)[mask])


@pytest.mark.parametrize("shape", SHAPES)
def test_lesion_mass_effect_is_a_smooth_push_outside_the_mask(shape):
    image, brain, _ = phantom_brain(shape)
    new, mask, disp = syn.insert_lesion(image, brain, 1, radius=(2.0, 4.0), mass_effect=0.4)
    pushed = warp(_t(image), disp, padding="border")
    _assert_unchanged_outside(new, pushed, mask)
    assert float(disp.abs().max()) > 0.3
    assert float(jacobian_determinant(disp).min()) > 0  # invertible: a deformation, not a topological change
    # pull-back towards the lesion centre pushes content outward: u · (x − c) ≤ 0
    centre = torch.stack(torch.nonzero(mask[0, 0], as_tuple=True)).float().mean(1)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    radial = (disp[0] * (grid - centre.view(-1, *([1] * len(shape))))).sum(0)
    assert float((radial <= 1e-3).float().mean()) > 0.95


@pytest.mark.parametrize("shape", SHAPES)
def test_resection_replaces_tissue_by_fluid(shape):
    image, brain, tissue = phantom_brain(shape)
    new, mask = syn.insert_resection(image, brain, 2, tissue=tissue, radius=(2.0, 4.0))
    _assert_unchanged_outside(new, _t(image), mask)
    assert not bool(mask[_t(brain) == 0].any())
    fluid = float(np.quantile(image[tissue == 1], 0.10))
    assert abs(float(new[mask].mean()) - fluid) < 0.05


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["open", "close"])
def test_ventricle_open_and_close(shape, mode):
    image, brain, tissue = phantom_brain(shape)
    csf = _t(tissue == 1) > 0
    new, mask = syn.ventricle_change(image, tissue == 1, 3, brain_mask=brain, mode=mode, radius=(2.0, 3.0))
    _assert_unchanged_outside(new, _t(image), mask)
    if mode == "open":  # tissue next to the ventricle becomes fluid
        assert not bool((mask & csf).any()) and float(new[mask].mean()) < 0.4
    else:  # ventricle voxels become the surrounding tissue
        assert bool((mask <= csf).all()) and float(new[mask].mean()) > 0.6


def test_generators_are_reproducible_with_a_seed():
    image, brain, tissue = phantom_brain((40, 48))
    a = syn.insert_lesion(image, brain, 7, radius=(2.0, 4.0))
    b = syn.insert_lesion(image, brain, 7, radius=(2.0, 4.0))
    c = syn.insert_lesion(image, brain, 8, radius=(2.0, 4.0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])
    cases = [syn.brain_cases(image, brain, tissue, 3, 2, syn.as_rng(5)) for _ in range(2)]
    for x, y in zip(*cases):
        assert torch.equal(x.fixed, y.fixed) and torch.equal(x.change_mask, y.change_mask)
    assert all(torch.equal(x, y) for x, y in zip(syn.cell_pair_2d((48, 48), 4), syn.cell_pair_2d((48, 48), 4)))


@pytest.mark.parametrize("shape", SHAPES)
def test_random_smooth_deformation_is_bounded_and_invertible(shape):
    u = syn.random_smooth_deformation(shape, 0, 2.5, spacing=8.0)
    assert u.shape == (1, len(shape), *shape)
    peak = float(u.norm(dim=1).max())
    assert 1.5 < peak < 3.5
    assert float(jacobian_determinant(u).min()) > 0
    assert not bool(syn.random_smooth_deformation(shape, 0, 0.0).any())


def test_deform_carries_the_mask_to_the_fixed_grid():
    image, brain, _ = phantom_brain((40, 48))
    new, mask, _ = syn.insert_lesion(image, brain, 0, radius=(3.0, 4.0), mass_effect=0.0)
    u = torch.zeros((1, 2, 40, 48))
    u[:, 0] = 3.0  # fixed(x) = changed(x + 3 e_i): the mask moves by −3 along i
    fixed, fixed_mask = syn.deform(new, mask, u)
    assert torch.equal(fixed_mask[0, 0, :-3], mask[0, 0, 3:])
    assert torch.allclose(fixed[0, 0, :-3], new[0, 0, 3:], atol=1e-5)


def test_random_intensity_change_keeps_structure():
    image, _, _ = phantom_brain((40, 48))
    out = syn.random_intensity_change(_t(image), 0, gamma_std=0.2, bias=0.3, noise=0.02)
    assert out.shape == (1, 1, 40, 48) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, _t(image), atol=1e-3)
    assert float(np.corrcoef(out.flatten().numpy(), image.flatten())[0, 1]) > 0.9
    assert bool((out[_t(image) == 0] == 0).all())  # background stays black (no noise there)


@pytest.mark.parametrize("ndim, shape", [(2, (40, 48, 9)), (3, (24, 28, 22))])
def test_brain_cases_masks_are_exact_without_nuisance(ndim, shape):
    image, brain, tissue = phantom_brain(shape)
    kinds = ("resection", "ventricle", "lesion")
    cases = syn.brain_cases(image, brain, tissue, 3, ndim, 0, kinds, max_displacement=0.0, intensity=False,
                            slice_jitter=1, options={"lesion": {"radius": (2, 3), "mass_effect": 0.0},
                                                     "resection": {"radius": (2, 4)}, "ventricle": {"radius": (2, 3)}})
    assert [c.kind for c in cases] == list(kinds)
    for case in cases:
        assert case.fixed.shape == case.moving.shape == case.change_mask.shape == (1, 1, *shape[:ndim])
        _assert_unchanged_outside(case.fixed, case.moving, case.change_mask)
        assert bool((case.change_mask <= case.brain_mask).all())
        assert case.displacement.shape == (1, ndim, *shape[:ndim])


def test_brain_cases_with_nuisance_keep_the_mask_on_the_fixed_grid():
    image, brain, tissue = phantom_brain((40, 48, 9))
    for case in syn.brain_cases(image, brain, tissue, 3, 2, 1, max_displacement=2.0, slice_jitter=1,
                                options={"lesion": {"radius": (2, 4)}, "resection": {"radius": (2, 4)},
                                         "ventricle": {"radius": (2, 3)}}):
        assert bool(case.change_mask.any())
        assert float(case.displacement.abs().max()) > 0.5
        changed = (case.fixed - warp(case.moving, case.displacement, padding="border")).abs()
        assert float(changed[case.change_mask].mean()) > float(changed[~case.change_mask].mean())


def test_control_and_outlier_sets():
    image, brain, tissue = phantom_brain((40, 48, 9))
    controls, tests = syn.control_and_outlier_sets(image, brain, tissue, 3, 2, 2, 0, slice_jitter=1,
                                                   lesion={"radius": (2, 4)})
    assert [c.kind for c in controls] == ["control"] * 3 and [t.kind for t in tests] == ["lesion"] * 2
    assert all(not bool(c.change_mask.any()) for c in controls)
    assert all(bool(t.change_mask.any()) for t in tests)
    assert not torch.equal(controls[0].fixed, controls[1].fixed)


@pytest.mark.skipif(not CACHE.exists(), reason="template cache not built")
def test_brain_cases_from_the_real_template_2d():
    from toporeg.training.dataset_cache import load_cache

    cases = syn.brain_cases(*syn.template_arrays(load_cache(CACHE), "mni152"), 3, 2, 0)
    for case in cases:
        assert case.fixed.shape == (1, 1, 96, 112) and 10 < int(case.change_mask.sum()) < 2000
        assert float((case.change_mask & ~case.brain_mask).sum()) <= 0.05 * float(case.change_mask.sum())


def test_cell_pair_masks_are_exact_without_deformation():
    for seed in range(3):
        fixed, moving, mask = syn.cell_pair_2d((64, 64), seed, n_cells=4, max_displacement=0.0, noise=0.0)
        assert fixed.shape == moving.shape == mask.shape == (1, 1, 64, 64)
        _assert_unchanged_outside(fixed, moving, mask)


def test_cell_pair_with_deformation_and_noise():
    fixed, moving, mask = syn.cell_pair_2d((64, 64), 1, n_cells=4)
    assert bool(mask.any()) and not torch.equal(fixed, moving)
    cases = syn.cell_cases(2, (48, 48), 0, n_cells=3)
    assert [c.kind for c in cases] == ["cell", "cell"] and not torch.equal(cases[0].fixed, cases[1].fixed)
    assert cases[0].displacement.shape == (1, 2, 48, 48) and bool(cases[0].displacement.any())


def test_validation_pairs_from_a_cache_dict():
    image, brain, tissue = phantom_brain((32, 36, 21))
    cache = {f"{name}_{key}": value for name in ("mni152", "colin27")
             for key, value in (("image", image), ("mask", brain), ("tissue", tissue))}
    pairs = syn.validation_pairs(cache, ndim=2, n=2, seed=3, kinds=("resection",))
    assert len(pairs) == 2 and set(pairs[0]) == {"fixed", "moving", "change", "brain"}
    assert pairs[0]["fixed"].shape == (1, 1, 32, 36) and bool(pairs[0]["change"].any())
