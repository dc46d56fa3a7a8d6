"""Neuralizer task and data augmentations (issue #7): each does what its name says, once per episode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toporeg.neuralizer.augment import (DataAugConfig, DuplicateChannels, IntensityMapping, MaskContour,
                                        MaskDilation, MaskInvert, PermuteChannels, SobelFilter, SyntheticModality,
                                        member_coords, member_intensity)
from toporeg.segmentation.head_synthesis import IntensityConfig
from toporeg.training.synth import RandomFields


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def square(lo: int, hi: int, size: int = 40, m: int = 2) -> torch.Tensor:
    y = torch.zeros(m, 1, size, size)
    y[:, :, lo:hi + 1, lo:hi + 1] = 1.0
    return y


def neighbourhood_max(mask: np.ndarray) -> np.ndarray:
    """8-connected dilation by one pixel, by shifting (reference implementation)."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            out |= padded[1 + di:1 + di + mask.shape[0], 1 + dj:1 + dj + mask.shape[1]]
    return out


def test_mask_invert_inverts():
    y = (torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    inv = MaskInvert()(y)
    assert torch.equal(inv + y, torch.ones_like(y)) and set(inv.unique().tolist()) <= {0.0, 1.0}


def test_mask_dilation_grows_by_one_pixel_ring():
    rng = np.random.default_rng(0)
    blob = rng.random((24, 24)) > 0.93
    y = torch.as_tensor(blob, dtype=torch.float32)[None, None]
    out = MaskDilation()(y)[0, 0].numpy() > 0.5
    assert np.array_equal(out, neighbourhood_max(blob))
    grown = MaskDilation()(square(10, 19))                     # 10×10 → 12×12
    assert torch.equal(grown, square(9, 20)) and grown.sum() == 2 * 144


def test_mask_contour_is_a_three_pixel_band_on_the_boundary():
    y = square(10, 29)                                          # 20×20 square
    band = MaskContour()(y)
    expected = square(9, 30) - square(12, 27)                   # outer ring, boundary ring, first inner ring
    assert torch.equal(band, expected)
    assert band[:, :, 20, 20].sum() == 0 and band[:, :, 2, 2].sum() == 0   # interior and far outside empty
    row = band[0, 0, 20].nonzero()[:, 0].tolist()               # a line through it crosses two 3-px bands
    assert row == [9, 10, 11, 28, 29, 30]


def test_permute_channels_permutes_identically_for_all_members():
    x = torch.stack([torch.full((5, 8, 8), float(c + 1)) for c in range(3)], 1)  # channel c holds c + 1
    x = x * torch.arange(1, 6).view(5, 1, 1, 1)                                   # members differ
    seen = set()
    for seed in range(12):
        out = PermuteChannels()(x, RandomFields(seed))
        order = [int(out[0, c, 0, 0].item()) - 1 for c in range(3)]
        assert sorted(order) == [0, 1, 2]
        assert torch.equal(out, x[:, order])                                       # same order for every member
        seen.add(tuple(order))
    assert len(seen) > 2


def test_duplicate_channels_fills_only_empty_channels():
    x = torch.zeros(4, 3, 8, 8)
    x[:, 1] = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.1
    out = DuplicateChannels(p=1.0)(x, RandomFields(0))
    assert torch.equal(out[:, 1], x[:, 1]) and torch.equal(out[:, 0], x[:, 1]) and torch.equal(out[:, 2], x[:, 1])
    assert torch.equal(DuplicateChannels(p=0.0)(x, RandomFields(0)), x)


def test_intensity_mapping_is_one_curve_for_the_episode():
    base = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    x = base.repeat(3, 1, 1, 1)
    out = IntensityMapping()(x, RandomFields(3))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])            # identical members, same map
    assert out[0, 0, 0, 0] == 0 and 0 <= out.min() and out.max() <= 1             # background stays 0
    again = IntensityMapping()(torch.cat([x, x.flip(-1)]), RandomFields(3))       # a function of intensity
    assert torch.allclose(again[3:], again[:3].flip(-1))
    assert not torch.allclose(out, x)


def test_sobel_filter_responds_to_edges_only():
    x = torch.zeros(2, 1, 12, 12)
    x[:, :, :, 6:] = 1.0
    g = SobelFilter()(x)
    assert g.max() == 1 and torch.all(g[:, :, :, :4] == 0) and torch.all(g[:, :, :, 8:] == 0)
    assert torch.all(g[:, :, :, 5:7] > 0)
    assert torch.all(SobelFilter()(torch.ones(1, 1, 6, 6)) == 0)


def test_synthetic_modality_shares_one_lookup_table():
    labels = torch.zeros(3, 1, 10, 10, dtype=torch.long)
    labels[:, :, :5] = 1
    labels[:, :, 5:, :5] = 2
    labels[1] = labels[1].flip(-1)                                                # members differ in anatomy
    img = SyntheticModality(IntensityConfig(t1_prior=0.0, texture=(0.0, 0.0)))(labels, RandomFields(5))
    assert img.shape == labels.shape
    for lab in (0, 1, 2):
        vals = img[labels == lab]
        assert torch.allclose(vals, vals[0].expand_as(vals))                      # one intensity per label
    assert len({round(float(img[labels == lab][0]), 6) for lab in (0, 1, 2)}) == 3


def test_member_coords_plain_window_and_independent_augmentation():
    rng = RandomFields(0)
    centres = torch.tensor([[20.0, 30.0]] * 3)
    aug = torch.tensor([False, True, True])
    c = member_coords(rng, (8, 10), centres, DataAugConfig(), aug)
    assert c.shape == (3, 2, 8, 10)
    assert torch.allclose(c[0, 0, :, 0], torch.arange(8.0) - 3.5 + 20)
    assert torch.allclose(c[0, 1, 0], torch.arange(10.0) - 4.5 + 30)
    assert not torch.allclose(c[1], c[2]) and not torch.allclose(c[1], c[0])
    assert (c[1:] - c[0]).abs().max() < 12                                         # small moves, not chaos


def test_member_intensity_keeps_background_and_respects_the_mask():
    img = torch.zeros(4, 1, 16, 16)
    img[:, :, 4:12, 4:12] = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    aug = torch.tensor([True, True, False, True])
    out = member_intensity(img, RandomFields(1), DataAugConfig(noise=(0.02, 0.05)), aug)
    assert torch.all(out[img == 0] == 0) and torch.equal(out[2], img[2])
    assert not torch.allclose(out[0], img[0]) and not torch.allclose(out[0], out[1])
