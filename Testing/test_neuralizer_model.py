"""Neuralizer network, losses and context bootstrapping: invariances, sizes, and learning a task from context."""

from __future__ import annotations

import pytest
import torch

from toporeg.models.weights import load_model, save_model
from toporeg.neuralizer.bootstrap import bootstrap_context
from toporeg.neuralizer.losses import SEG_ANCHOR, mse_loss, soft_dice_loss, task_loss
from toporeg.neuralizer.model import Neuralizer, segment_probability


def _inputs(b: int, n: int, size=(16, 24), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, *size, generator=g), torch.rand(b, n, 3, *size, generator=g),
            torch.rand(b, n, 1, *size, generator=g))


@pytest.fixture(scope="module")
def small() -> Neuralizer:
    torch.manual_seed(0)
    return Neuralizer(channels=8, levels=3).eval()


def test_output_is_invariant_to_context_order(small):
    x, ci, co = _inputs(2, 5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    with torch.no_grad():
        a, b = small(x, ci, co), small(x, ci[:, perm], co[:, perm])
    assert a.shape == (2, 1, 16, 24)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_defined_for_any_context_size(small, n):
    x, ci, co = _inputs(1, n)
    with torch.no_grad():
        y = small(x, ci, co)
    assert y.shape == (1, 1, 16, 24) and torch.isfinite(y).all()


def test_context_is_used_and_duplicates_average_out(small):
    """The mean over members: a set and the same set twice give the same output; a different set does not."""
    x, ci, co = _inputs(1, 3)
    with torch.no_grad():
        once, twice = small(x, ci, co), small(x, ci.repeat(1, 2, 1, 1, 1), co.repeat(1, 2, 1, 1, 1))
        other = small(x, ci, 1 - co)
    torch.testing.assert_close(once, twice, atol=1e-5, rtol=1e-5)
    assert (once - other).abs().max() > 1e-3


def test_bad_shapes_are_refused(small):
    x, ci, co = _inputs(1, 2)
    with pytest.raises(ValueError, match="empty"):
        small(x, ci[:, :0], co[:, :0])
    with pytest.raises(ValueError, match="multiple of 4"):
        small(x[..., :15, :], ci[..., :15, :], co[..., :15, :])
    with pytest.raises(ValueError, match="channels"):
        small(x[:, :2], ci[:, :, :2], co)


def test_weights_round_trip(tmp_path, small):
    path, _ = save_model(small, tmp_path / "nz.safetensors", {"neuralizer": {"max_context": 4}})
    loaded = load_model(path)
    loaded = loaded[0] if isinstance(loaded, tuple) else loaded
    x, ci, co = _inputs(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x, ci, co), small(x, ci, co))


def test_losses_match_definitions():
    p = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    assert soft_dice_loss(p, t).item() == pytest.approx(1 - 2 / 3, abs=1e-4)
    assert mse_loss(p, t, sigma2=0.05).item() == pytest.approx(0.25 / 0.1)
    y = torch.stack([p, p])
    loss, terms = task_loss(y, torch.stack([t, t]), torch.tensor([True, False]))
    dice = soft_dice_loss(segment_probability(p), t).item() + SEG_ANCHOR * 0.25
    assert loss.item() == pytest.approx((dice + 2.5) / 2, abs=1e-4)
    assert terms["dice_loss"].item() == pytest.approx(dice, abs=1e-5) and terms["mse_loss"].item() == pytest.approx(2.5)


def test_bootstrap_pads_with_jittered_copies():
    g = torch.Generator().manual_seed(1)
    ci = torch.zeros(2, 3, 3, 32, 32)
    ci[:, :, :, 8:24, 8:24] = torch.arange(1, 4, dtype=torch.float32).view(1, 3, 1, 1, 1)
    co = ci[:, :, :1].clone()
    pi, po = bootstrap_context(ci, co, 8, generator=g)
    assert pi.shape == (2, 8, 3, 32, 32) and po.shape == (2, 8, 1, 32, 32)
    torch.testing.assert_close(pi[:, :3], ci)  # originals unchanged and first
    torch.testing.assert_close(po[:, 3:], pi[:, 3:, :1])  # input and output moved together
    for b in range(2):
        for m in range(3, 8):  # each copy is a small move of one original (its square's value identifies it)
            value = round(float(pi[b, m, 0, 16, 16]), 4)
            assert value in (1.0, 2.0, 3.0)
            source = ci[b, int(value) - 1, 0]
            a, s_ = pi[b, m, 0] > value / 2, source > value / 2
            assert (a & s_).sum() / (a | s_).sum() > 0.5  # a small move: the squares still overlap mostly
    moved = [not torch.equal(pi[b, m], ci[b, int(round(float(pi[b, m, 0, 16, 16]))) - 1])
             for b in range(2) for m in range(3, 8)]
    assert all(moved)  # jittered, not plain copies
    same = bootstrap_context(ci, co, 3, generator=g)
    assert same[0] is ci and same[1] is co


def _toy_episode(b: int, n: int, g: torch.Generator):
    """Bright rectangles on noise; the task (mask or inverted mask) is only knowable from the context."""
    def draw(k):
        img = torch.rand(k, 1, 16, 16, generator=g) * 0.2
        mask = torch.zeros(k, 1, 16, 16)
        for i in range(k):
            r0, c0 = torch.randint(1, 8, (2,), generator=g).tolist()
            h, w = torch.randint(4, 8, (2,), generator=g).tolist()
            mask[i, :, r0:r0 + h, c0:c0 + w] = 1
        return torch.cat([img + 0.7 * mask, torch.zeros(k, 2, 16, 16)], 1), mask
    invert = torch.rand(b, generator=g) < 0.5
    x, y = draw(b)
    ci, co = draw(b * n)
    ci, co = ci.view(b, n, 3, 16, 16), co.view(b, n, 1, 16, 16)
    flip = invert.view(b, 1, 1, 1)
    return x, torch.where(flip, 1 - y, y), ci, torch.where(flip.unsqueeze(1), 1 - co, co), invert


def test_tiny_model_learns_the_task_from_its_context():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Neuralizer(channels=8, levels=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    seg = torch.ones(8, dtype=torch.bool)
    for _ in range(250):
        x, y, ci, co, _ = _toy_episode(8, 2, g)
        loss, _ = task_loss(model(x, ci, co), y, seg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, ci, co, invert = _toy_episode(32, 2, g)
    with torch.no_grad():
        pred = model(x, ci, co) >= 0.5
    truth = y > 0.5
    dice = [(2 * (pred[i] & truth[i]).sum() / (pred[i].sum() + truth[i].sum())).item() for i in range(32)]
    assert min(dice) > 0.8, dice
    assert invert.any() and (~invert).any()
