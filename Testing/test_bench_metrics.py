"""Benchmark metrics, case generation and peer field directions, on answers known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import oblique_affine, smooth_blobs
from toporeg.bench import cases, metrics
from toporeg.bench.peers import Measure, PeerResult, direction_check, identity
from toporeg.io import Volume


def blob_case(shape=(28, 32, 24), spacing=3.0, max_mm=6.0, seed=0, intensity=False) -> cases.Case:
    aff = oblique_affine(spacing=(spacing,) * 3, angles=(0.1, -0.05, 0.2), origin=(-40.0, -50.0, -30.0))
    img = smooth_blobs(shape, seed=seed, n=8)
    fixed = Volume(img / img.max() * 100.0, aff)
    labels = fixed.with_data(np.digitize(img, np.quantile(img, [0.4, 0.6, 0.8])).astype(np.uint8), is_label=True)
    v = cases.smooth_noise(shape, 3.0, np.random.default_rng(seed))
    v = cases.scale_to_max_displacement(v, fixed, max_mm)
    return cases.synthetic_case("blobs", fixed, labels, v, seed=seed, intensity=intensity)


# --- metrics -----------------------------------------------------------------------------------------------
def test_dice_known_values():
    a = np.zeros((10, 10, 10), np.uint8)
    a[:5] = 1
    a[5:] = 2
    assert metrics.mean_dice(a, a) == 1.0
    b = np.zeros_like(a)
    b[:5] = 2
    b[5:] = 1
    assert metrics.mean_dice(a, b) == 0.0
    c = a.copy()
    c[:5, :5] = 0  # label 1 loses half its voxels: Dice = 2·250 / (500 + 250)
    assert metrics.dice_per_label(a, c)[1] == pytest.approx(2 / 3)
    assert metrics.dice_per_label(a, c)[2] == 1.0
    assert 0 not in metrics.dice_per_label(c, a)  # only labels of the first (fixed) map count
    assert metrics.dice_per_label(c, a, exclude_background=False)[0] == 0.0


def test_displacement_error():
    u = np.random.default_rng(0).normal(size=(6, 7, 8, 3))
    assert metrics.displacement_error_p95(u, u) == 0.0
    shifted = u + np.array([3.0, 4.0, 0.0])
    assert metrics.displacement_error_p95(shifted, u) == pytest.approx(5.0)
    mask = np.zeros((6, 7, 8), bool)
    mask[:2] = True
    bad = u.copy()
    bad[2:] += 100.0  # outside the mask: ignored
    assert metrics.displacement_error_p95(bad, u, mask) == 0.0


def test_folding_zero_and_reflection(oblique_volume):
    zero = np.zeros(oblique_volume.grid_shape + (3,))
    assert metrics.folding_percent(zero, oblique_volume) == 0.0
    # x + u(x) = reflection of RAS x through the grid centre: det J = −1 everywhere
    ijk = np.indices(oblique_volume.grid_shape).reshape(3, -1).T
    ras = oblique_volume.voxel_to_ras(ijk)
    centre = ras.mean(0)
    u = np.zeros_like(ras)
    u[:, 0] = -2.0 * (ras[:, 0] - centre[0])
    u = u.reshape(oblique_volume.grid_shape + (3,))
    assert metrics.folding_percent(u, oblique_volume) == 100.0
    det = metrics.jacobian_of_physical(u, oblique_volume)
    assert torch.allclose(det, torch.full_like(det, -1.0), atol=1e-6)


def test_warp_translation_and_landmarks():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    data = np.arange(10 * 11 * 12, dtype=np.float32).reshape(10, 11, 12)
    vol = Volume(data, aff)
    u = np.zeros((10, 11, 12, 3))
    u[..., 1] = 4.0  # 2 voxels along j
    warped = metrics.warp_with_physical_field(vol, vol, u)
    assert np.allclose(warped.data[:, :-2], data[:, 2:])
    pts = np.array([[4.0, 6.0, 8.0], [10.0, 2.0, 3.0]])
    assert np.allclose(metrics.map_points(u, vol, pts), pts + [0.0, 4.0, 0.0])
    assert metrics.landmark_error(u, vol, pts, pts + [0.0, 4.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    assert metrics.landmark_error(u, vol, pts, pts) == pytest.approx(4.0)


# --- case generation ------------------------------------------------------------------------------------------
def test_synthetic_case_ground_truth():
    case = blob_case()
    norm = np.linalg.norm(case.gt_u_ras, axis=-1)
    assert norm.max() == pytest.approx(6.0, rel=0.02)
    assert metrics.folding_percent(case.gt_u_ras, case.fixed) == 0.0
    before = metrics.mean_dice(case.fixed_labels, case.moving_labels)
    back = metrics.warp_with_physical_field(case.moving_labels, case.fixed, case.gt_u_ras, "nearest")
    after = metrics.mean_dice(case.fixed_labels, back)
    assert after > 0.95 and after > before
    image = metrics.warp_with_physical_field(case.moving, case.fixed, case.gt_u_ras).data
    inner = (slice(4, -4),) * 3
    assert np.corrcoef(image[inner].ravel(), case.fixed.data[inner].ravel())[0, 1] > 0.99


def test_intensity_change_is_seeded_and_bounded():
    data = smooth_blobs((20, 20, 20)) * 100
    a = cases.change_intensity(data, np.random.default_rng(5), np.ones(3))
    b = cases.change_intensity(data, np.random.default_rng(5), np.ones(3))
    assert np.array_equal(a, b) and a.dtype == np.float32 and (a >= 0).all()
    assert 0.8 < np.corrcoef(a.ravel(), data.ravel())[0, 1] < 0.9999


def test_case_cache_round_trip(tmp_path):
    case = blob_case(shape=(12, 14, 10))
    cases.save_case(case, tmp_path / "blobs")
    back = cases.read_case(tmp_path / "blobs")
    assert back.fixed.same_grid(case.fixed) and back.moving_labels.is_label
    assert np.allclose(back.gt_u_ras, case.gt_u_ras) and back.fixed_landmarks is None


@pytest.mark.skipif(not (cases.MRICRON / "ch2.nii.gz").exists(), reason="Debian mricron-data not installed")
def test_colin_case_ground_truth(tmp_path):
    case = cases.load_case("colin_random", cache=tmp_path)
    mask = case.fixed_mask.data > 0
    assert case.gt_u_ras.shape == case.fixed.grid_shape + (3,) == (91, 109, 91, 3)
    back = metrics.warp_with_physical_field(case.moving_labels, case.fixed, case.gt_u_ras, "nearest")
    assert metrics.mean_dice(case.fixed_labels, back) > 0.95
    assert metrics.folding_percent(case.gt_u_ras, case.fixed, mask) == 0.0


# --- measuring and field directions of the peers ------------------------------------------------------------
def test_measure_and_identity():
    with Measure() as m:
        block = np.ones(20_000_000)  # 160 MB
        block[::4096] = 2.0
    assert m.seconds >= 0 and m.peak_mb > 100
    case = blob_case(shape=(12, 14, 10))
    r = identity(case.fixed, case.moving)
    assert isinstance(r, PeerResult) and not r.u_ras.any()
    assert direction_check(r, case.fixed, case.moving) == pytest.approx(1.0)


def _translated_case() -> cases.Case:
    """Blobs with a 6 mm shift plus a small random warp: a wrong sign or LPS/RAS slip shows at once."""
    case = blob_case(shape=(32, 36, 28), max_mm=3.0, intensity=False)
    moving_aff = case.moving.affine.copy()
    moving_aff[:3, 3] += [6.0, -4.0, 2.0]
    case.moving = Volume(case.moving.data, moving_aff)
    case.moving_labels = Volume(case.moving_labels.data, moving_aff, is_label=True)
    return case


@pytest.mark.parametrize("name", ["ants_affine", "ants_syn", "sitk_demons", "elastix_bspline"])
def test_peer_field_direction(name):
    from toporeg.bench import peers
    module = {"ants_affine": "ants", "ants_syn": "ants", "elastix_bspline": "itk"}.get(name)
    if module:
        pytest.importorskip(module)
    case = _translated_case()
    if name == "elastix_bspline":  # default maps run ~1 min whatever the size; fewer iterations suffice here
        result = peers.elastix_default(case.fixed, case.moving, max_iterations=40)
    else:
        result = peers.peer_methods()[name](case.fixed, case.moving)
    assert result.u_ras.shape == case.fixed.grid_shape + (3,)
    inner = np.zeros(case.fixed.grid_shape, bool)
    inner[6:-6, 6:-6, 6:-6] = True
    assert direction_check(result, case.fixed, case.moving, inner) > 0.99
    assert np.abs(result.u_ras).max() > 2.0  # a real mapping was checked, not a near-identity
    if name == "elastix_bspline":
        return  # the default maps' 4-level pyramid is too coarse for this 32-voxel toy image to register well
    before = metrics.mean_dice(case.fixed_labels, metrics.warp_with_physical_field(
        case.moving_labels, case.fixed, np.zeros_like(result.u_ras), "nearest"))
    after = metrics.mean_dice(case.fixed_labels, metrics.warp_with_physical_field(
        case.moving_labels, case.fixed, result.u_ras, "nearest"))
    assert after > before + 0.1


# --- the harness ---------------------------------------------------------------------------------------------
def test_run_benchmark_writes_outputs(tmp_path):
    import json

    from toporeg.bench.registration import JSON_NAME, MD_NAME, PNG_NAME, main, run_benchmark

    case = blob_case(shape=(12, 14, 10))

    def truth(fixed, moving):
        return PeerResult(case.gt_u_ras.astype(np.float64), 0.5, 1.0, "ground truth")

    def broken(fixed, moving):
        raise RuntimeError("boom")

    rows = run_benchmark({"identity": identity, "truth": truth, "broken": broken}, [case], tmp_path, log=lambda m: None)
    by = {r["method"]: r for r in rows}
    assert by["truth"]["p95_error_mm"] == pytest.approx(0.0, abs=1e-4) and by["truth"]["folding_percent"] == 0.0
    assert by["truth"]["dice"] > by["identity"]["dice"] and "error" in by["broken"]
    doc = json.loads((tmp_path / JSON_NAME).read_text(encoding="utf-8"))
    assert doc["machine"]["cores"] >= 1 and len(doc["results"]) == 3 and doc["commit"]
    md = (tmp_path / MD_NAME).read_text(encoding="utf-8")
    assert "| truth | " in md and "reproduce" in md and (tmp_path / PNG_NAME).stat().st_size > 1000
    assert main(["--out", str(tmp_path), "--cases", "nope"]) == 2
