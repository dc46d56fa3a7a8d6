"""The coarse ELBO fit (`fit_pair(coarse=k)`): μ optimised on block-averaged features, scored at full resolution —
what makes 80-channel semantic features affordable on 3D brains. It must find the same changes as the full fit."""

from __future__ import annotations

import numpy as np
import torch

from conftest import smooth_velocity, textured_phantom
from test_topology_core import _t, auc, disk, with_blob
from toporeg.topology.features import IntensityFeatures
from toporeg.topology.optimize import fit_pair, resize_displacement
from toporeg.topology.pipeline import TopologySettings
from toporeg.topology.score import symmetric_score

from toporeg.transforms.sampling import warp


def test_resize_displacement_keeps_physical_displacement():
    shape, coarse = (20, 24, 18), (10, 12, 9)
    mu = torch.zeros((1, 3, *shape))
    mu[:, 0], mu[:, 1], mu[:, 2] = 2.0, -4.0, 3.0          # full-grid voxels
    small = resize_displacement(mu, coarse)
    assert small.shape == (1, 3, *coarse)
    assert torch.allclose(small[0, :, 3, 4, 5], torch.tensor([1.0, -2.0, 1.5]))
    back = resize_displacement(small, shape)
    assert torch.allclose(back, mu, atol=1e-5)
    assert resize_displacement(mu, shape) is not mu and torch.equal(resize_displacement(mu, shape), mu)


def test_coarse_fit_finds_the_same_change_on_the_full_grid():
    shape = (24, 28, 20)
    image = _t(textured_phantom(shape, seed=5))
    blob = disk(shape, (12, 14, 10), 3.5)
    u = smooth_velocity(shape, magnitude=1.0, seed=2, sigma=4.0)
    fixed = warp(with_blob(image, blob, value=-0.5), u, padding="border")
    blob_on_fixed = (warp(blob[None, None].float(), u)[0, 0] > 0.5).numpy()
    features = IntensityFeatures()
    maps = {}
    for k in (1, 2):
        fit = lambda j, i, init, progress, k=k: fit_pair(j, i, features, init_mu=init, iterations=15, lr=0.05,  # noqa: E731
                                                         progress=progress, coarse=k)
        pair = symmetric_score(fixed, image, fit)
        assert pair.forward.mu.shape == (1, 3, *shape) and pair.l_sym.shape == shape
        maps[k] = pair.l_sym.numpy()
    assert auc(maps[2].ravel(), blob_on_fixed.ravel()) > 0.9
    assert auc(maps[2].ravel(), blob_on_fixed.ravel()) > auc(maps[1].ravel(), blob_on_fixed.ravel()) - 0.05
    assert np.corrcoef(maps[1].ravel(), maps[2].ravel())[0, 1] > 0.8


def test_the_coarse_fit_is_automatic_only_for_large_semantic_grids():
    assert TopologySettings(features="semantic").fit_scale((96, 112, 96)) == 2
    assert TopologySettings(features="semantic").fit_scale((96, 112)) == 1
    assert TopologySettings(features="intensity").fit_scale((96, 112, 96)) == 1
    assert TopologySettings(features="intensity", fit_downsample=3).fit_scale((8, 8)) == 3
