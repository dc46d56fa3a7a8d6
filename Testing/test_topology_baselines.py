"""Baseline topological-change scores and the pixel-wise ROC/AUC with a subject bootstrap (issue #5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toporeg.bench.roc import auc, bootstrap_auc, pair_wins, roc_curve
from toporeg.topology.baselines import (baseline_scores, intensity_difference_score, jacobian_score, li_wyatt_score,
                                        outlier_adjusted)
from toporeg.transforms.sampling import identity_grid

from conftest import phantom

SHAPES = [(32, 36), (16, 18, 14)]


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)[None, None]


def _ball(shape, centre, radius) -> torch.Tensor:
    offset = identity_grid(shape) - torch.tensor(centre, dtype=torch.float32).view(1, -1, *[1] * len(shape))
    return (offset**2).sum(1, keepdim=True) < radius**2


# --- baselines ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_identical_images_and_identity_warp_score_zero(shape):
    image = _t(phantom(shape))
    mu = torch.zeros((1, len(shape), *shape))
    scores = baseline_scores(image, image, mu, sigma=1.5)
    assert set(scores) == {"jacobian", "li_wyatt", "intensity"}
    for name, score in scores.items():
        assert score.shape == shape, name
        assert float(score.abs().max()) < 1e-6, name  # grid_sample's identity is exact up to round-off


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_jacobian_score_of_a_scaling_is_analytic(shape, scale):
    ndim = len(shape)
    centre = torch.tensor([(n - 1) / 2 for n in shape]).view(1, ndim, *[1] * ndim)
    mu = (scale - 1.0) * (identity_grid(shape) - centre)  # x ↦ c + s (x − c): det = s^D everywhere
    expected = (ndim * math.log(scale)) ** 2
    assert torch.allclose(jacobian_score(mu), torch.full(shape, expected), rtol=1e-4, atol=1e-6)


def test_jacobian_score_treats_folding_as_extreme_compression():
    shape = (12, 10)
    mu = torch.zeros((1, 2, *shape))
    mu[0, 0] = -2.0 * identity_grid(shape)[0, 0]  # x_i ↦ −x_i: a reflection, det = −1
    assert torch.allclose(jacobian_score(mu, eps=1e-5), torch.full(shape, math.log(1e-5) ** 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_blob_difference_scores_high_inside_the_blob(shape):
    moving = _t(phantom(shape, seed=1))
    blob = _ball(shape, [n / 2 for n in shape], min(shape) / 6)
    fixed = torch.where(blob, torch.full_like(moving, 1.5), moving)
    mu = torch.zeros((1, len(shape), *shape))
    diff = intensity_difference_score(fixed, moving, mu)
    assert float(diff[blob[0, 0]].min()) > 0.01 and float(diff[~blob[0, 0]].max()) < 1e-8
    lw = li_wyatt_score(fixed, moving, mu, sigma=1.5)
    assert float(lw[blob[0, 0]].mean()) > 5 * float(lw[~blob[0, 0]].mean())
    assert float(lw.min()) >= 0 and float(lw.max()) <= 1


def test_li_wyatt_discounts_residuals_on_edges():
    """The same residual scores lower on a strong edge of the fixed image than in a flat region."""
    shape = (40, 40)
    base = torch.zeros((1, 1, *shape))
    base[..., 20:] = 1.0  # a vertical edge at j = 20
    residual = torch.zeros_like(base)
    residual[..., 10:14, 18:22] = 0.3   # on the edge
    residual[..., 26:30, 4:8] = 0.3     # flat region
    score = li_wyatt_score(base + residual, base, torch.zeros((1, 2, *shape)), sigma=1.5)
    assert float(score[26:30, 4:8].mean()) > 2 * float(score[10:14, 18:22].mean())


def test_outlier_adjusted_subtracts_the_control_mean():
    gen = torch.Generator().manual_seed(0)
    tests = [torch.rand((6, 7), generator=gen) for _ in range(3)]
    controls = [torch.rand((6, 7), generator=gen) for _ in range(4)]
    expected = torch.stack(tests).mean(0) - torch.stack(controls).mean(0)
    assert torch.allclose(outlier_adjusted(tests, controls), expected)
    assert torch.allclose(outlier_adjusted(tests[0], controls[0]), tests[0] - controls[0])
    per_pair = torch.stack([t - c for t, c in zip(tests, controls[:3])]).mean(0)  # E_c[s(J|I_c) − m_c]
    assert torch.allclose(outlier_adjusted(tests, controls[:3]), per_pair, atol=1e-6)


# --- ROC / AUC ----------------------------------------------------------------------------------------------------
def _brute_auc(scores, labels) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_perfect_reversed_and_random():
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.2
    scores = labels + rng.random(5000) * 0.5
    assert auc(scores, labels) == 1.0
    assert auc(-scores, labels) == 0.0
    assert abs(auc(rng.random(20000), rng.random(20000) < 0.3) - 0.5) < 0.02


def test_auc_handles_ties():
    labels = np.array([0, 1, 0, 1, 1, 0], bool)
    assert auc(np.ones(6), labels) == 0.5
    fpr, tpr, thresholds = roc_curve(np.ones(6), labels)
    assert np.allclose(fpr, [0, 1]) and np.allclose(tpr, [0, 1]) and thresholds[0] == np.inf


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_and_the_curve_area(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = rng.integers(0, 8, 300) + labels * rng.integers(0, 3, 300)  # many ties
    value = auc(scores, labels)
    assert value == pytest.approx(_brute_auc(scores.astype(float), labels), abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert value == pytest.approx(float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)), abs=1e-12)


def test_auc_region_mask_and_errors():
    scores = np.array([[0.9, 0.1], [0.8, 5.0]])
    labels = np.array([[1, 0], [1, 0]], bool)
    assert auc(scores, labels) == 0.5
    assert auc(scores, labels, mask=np.array([[1, 1], [1, 0]])) == 1.0  # the outlier voxel is outside the region
    with pytest.raises(ValueError, match="both classes"):
        auc(scores, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([np.nan, 1.0]), np.array([True, False]))


def _subjects(seed, n=6, size=200):
    rng = np.random.default_rng(seed)
    labels = [rng.random(size) < rng.uniform(0.0, 0.3) for _ in range(n)]
    scores = [rng.integers(0, 10, size) + 2 * y * rng.random(size) for y in labels]
    return scores, labels


def test_pair_wins_give_the_pooled_auc_of_any_resample():
    scores, labels = _subjects(1)
    wins, pos, neg = pair_wins(scores, labels)
    assert auc(np.concatenate(scores), np.concatenate(labels)) == pytest.approx(wins.sum() / (pos.sum() * neg.sum()))
    draw = np.array([0, 0, 3, 5, 5, 5])
    w = np.bincount(draw, minlength=6).astype(float)
    pooled = auc(np.concatenate([scores[i] for i in draw]), np.concatenate([labels[i] for i in draw]))
    assert w @ wins @ w / ((w @ pos) * (w @ neg)) == pytest.approx(pooled, abs=1e-12)


def test_bootstrap_auc_is_reproducible_and_brackets_the_estimate():
    scores, labels = _subjects(2)
    a = bootstrap_auc(scores, labels, n_boot=300, seed=4)
    assert a == bootstrap_auc(scores, labels, n_boot=300, seed=4)
    assert a != bootstrap_auc(scores, labels, n_boot=300, seed=5)
    assert a["auc"] == pytest.approx(auc(np.concatenate(scores), np.concatenate(labels)))
    assert a["p2_5"] <= a["auc"] <= a["p97_5"] and a["std"] > 0 and 0 < a["n_valid"] <= 300
    assert abs(a["mean"] - a["auc"]) < 2 * a["std"]
