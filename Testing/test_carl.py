"""CARL: coordinate attention, Ξ's [W,U] translation equivariance, losses, model composition, training."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import smooth_velocity, textured_phantom
from toporeg.carl import (CARL, CoordinateAttentionStep, coordinate_attention, diffusion, gradicon, lncc_gaussian,
                          upsample_displacement)
from toporeg.transforms.integration import invert_displacement
from toporeg.transforms.sampling import identity_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_coordinate_attention_recovers_an_integer_translation():
    """Sharp features (random, norm 8: logit 64 at the match, |⟨q,k⟩| ≲ 30 elsewhere) on a key grid padded by p:
    a fixed voxel whose features are the moving features at x + t attends to x + t, even beyond the grid."""
    gen = torch.Generator().manual_seed(0)
    shape, p, t = (20, 24), 6, torch.tensor([5.0, -4.0])
    padded = tuple(n + 2 * p for n in shape)
    keys = torch.randn((1, 64, *padded), generator=gen)
    keys = 8.0 * keys / keys.norm(dim=1, keepdim=True)
    coords = identity_grid(padded) - p                               # moving voxel coordinates −p … N + p − 1
    start = [p + int(s) for s in t]
    query = keys[:, :, start[0]:start[0] + shape[0], start[1]:start[1] + shape[1]]
    disp = coordinate_attention(query, keys, coords) - identity_grid(shape)
    assert (disp - t.view(1, 2, 1, 1)).abs().max() < 0.1


def _embedded(core: torch.Tensor, size: int, offset: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros((1, 1, size, size))
    out[0, 0, offset[0]:offset[0] + core.shape[0], offset[1]:offset[1] + core.shape[1]] = core
    return out


@torch.no_grad()
def test_coordinate_attention_step_is_wu_equivariant_to_integer_translations():
    """Ξ[M∘W, F∘U] = W⁻¹∘Ξ[M,F]∘U for W = x + w, U = x + v, i.e. u'(x) = u(x + v) + v − w, with a random encoder.

    Tolerance 0.01 voxel (shifts of 4–6 voxels; the raw answers differ by > 1 voxel): the proof needs every key
    with noticeable attention weight to lie in both key sets, which differ by a strip of background when W moves
    the content relative to the padded key grid. The encoder has no biases, so background and padding have zero
    features (logit 0 against up to 16 for content) and that strip keeps only a tiny weight: this pair measures
    ~0.004 voxel (float32 rounding alone is ~1e-5 × 40). With biases the error is several voxels.
    """
    torch.manual_seed(0)
    xi = CoordinateAttentionStep(2, channels=32, blocks=2, pad=9)
    core = torch.as_tensor(textured_phantom((24, 24), seed=3))
    size, off, w, v = 40, 8, (3, -2), (-2, 4)
    moving, fixed = _embedded(core, size, (off, off)), _embedded(core.flip(0), size, (off, off))
    moved = _embedded(core, size, (off - w[0], off - w[1]))             # M∘W: content moves by −w
    fixed_moved = _embedded(core.flip(0), size, (off - v[0], off - v[1]))
    u, u2 = xi(moving, fixed), xi(moved, fixed_moved)
    inside = slice(off - v[0], off - v[0] + 24), slice(off - v[1], off - v[1] + 24)  # x with x + v on the content
    shifted = slice(off, off + 24), slice(off, off + 24)
    expected = u[:, :, shifted[0], shifted[1]] + torch.tensor([v[0] - w[0], v[1] - w[1]]).view(1, 2, 1, 1)
    got = u2[:, :, inside[0], inside[1]]
    assert (got - expected).abs().max() < 0.01
    assert (got - u[:, :, inside[0], inside[1]]).abs().max() > 1.0   # not vacuous: the answer did change


def test_fused_and_chunked_attention_agree_in_values_and_gradients():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn((2, 8, 5, 7), generator=gen, requires_grad=True)
    k = torch.randn((2, 8, 6, 9), generator=gen, requires_grad=True)
    coords = identity_grid((6, 9)) - 2.0
    weights = torch.randn((2, 2, 5, 7), generator=gen)
    results = []
    for chunk, fused in ((4, False), (10_000, False), (4, True)):
        out = coordinate_attention(q, k, coords, chunk=chunk, fused=fused)
        results.append((out, *torch.autograd.grad((out * weights).sum(), (q, k))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-5)


def test_gradicon_is_zero_for_inverse_pairs_and_positive_otherwise():
    shape, t = (24, 28), torch.tensor([3.0, -5.0]).view(1, 2, 1, 1)
    shift = t.expand(1, 2, *shape)
    assert gradicon(shift, -shift) < 1e-8
    # φ_AB = 10 % scaling about the centre, φ_BA = identity: ∇(φ_AB∘φ_BA) − I = 0.1 I, whose mean squared entry
    # summed over the ndim directions is 0.01 (border-extended samples near the edge lower it slightly)
    centre = torch.tensor([(n - 1) / 2 for n in shape]).view(1, 2, 1, 1)
    scaling = 0.1 * (identity_grid(shape) - centre)
    assert 0.007 < float(gradicon(scaling, torch.zeros_like(scaling))) < 0.0105
    phi = smooth_velocity(shape, magnitude=2.0, seed=2)
    assert float(gradicon(phi, invert_displacement(phi))) < 0.1 * float(gradicon(phi, torch.zeros_like(phi)))


def test_lncc_and_diffusion():
    a = torch.as_tensor(textured_phantom((32, 36), seed=1))[None, None]
    b = torch.as_tensor(textured_phantom((32, 36), seed=2))[None, None]
    assert abs(float(lncc_gaussian(a, a))) < 1e-3
    assert abs(float(lncc_gaussian(a, 3.0 * b + 0.5)) - float(lncc_gaussian(a, b))) < 1e-3
    assert float(lncc_gaussian(a, b)) > 0.1
    ramp = torch.zeros((1, 2, 10, 12))
    ramp[:, 0] = 0.1 * identity_grid((10, 12))[:, 0]                 # ∂u_0/∂x_0 = 0.1, all else 0
    assert abs(float(diffusion(ramp)) - 0.005) < 1e-7                 # 0.1² averaged over 2 components
    assert float(diffusion(torch.full((1, 2, 10, 12), 4.0))) == 0.0


def test_upsampling_matches_average_pooling_geometry():
    """Coarse voxel c sits at fine 2c + ½: a coarse translation doubles, and a coarse field u = a·c becomes
    u = a·(x − ½) in fine voxels (inside; linear upsampling clamps at the outermost half voxels)."""
    const = torch.full((1, 3, 4, 5, 6), 1.5)
    assert torch.allclose(upsample_displacement(const, (8, 9, 12)), torch.full((1, 3, 8, 9, 12), 3.0))
    coarse = 0.2 * identity_grid((6, 7))
    fine = upsample_displacement(coarse, (12, 14))
    expected = 2.0 * 0.2 * (identity_grid((12, 14)) - 0.5) / 2.0
    assert torch.allclose(fine[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("shape", [(37, 45), (13, 18, 11)])
def test_carl_shapes_depths_and_zero_initialised_refinement(shape):
    torch.manual_seed(0)
    ndim = len(shape)
    model = CARL(ndim=ndim, channels=8, blocks=1, pad=3, unet_encoder=(4, 8), unet_final=(4,)).eval()
    gen = torch.Generator().manual_seed(0)
    moving, fixed = torch.rand((2, 1, *shape), generator=gen), torch.rand((2, 1, *shape), generator=gen)
    outs = {d: model(moving, fixed, depth=d) for d in (1, 2, 3)}
    for out in outs.values():
        assert out.shape == (2, ndim, *shape) and torch.isfinite(out).all()
    assert torch.allclose(outs[3], outs[1], atol=1e-4) and torch.allclose(outs[2], outs[1], atol=1e-4)
    ab, ba = model.forward_pair(moving[:1], fixed[:1])
    assert torch.allclose(ab, outs[3][:1], atol=1e-5)
    assert torch.allclose(ba, model(fixed[:1], moving[:1]), atol=1e-5)
    with pytest.raises(ValueError):
        model(moving, fixed, depth=4)


def test_one_training_step_has_finite_gradients():
    from toporeg.training.train_carl import CarlTrainConfig, carl_loss
    torch.manual_seed(0)
    model = CARL(ndim=2, channels=8, blocks=1, pad=4, unet_encoder=(4, 8), unet_final=(4,))
    a = torch.as_tensor(textured_phantom((32, 40), seed=1))[None, None]
    b = torch.roll(a, (4, -3), dims=(2, 3))
    cfg = CarlTrainConfig(ndim=2, warmup_steps_diffusion=1)
    for step in (0, 1):  # diffusion phase, then GradICON phase
        model.zero_grad()
        loss = carl_loss(*model.forward_pair(a, b), a, b, cfg, step)
        loss["total"].backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert model.xi.encoder.stem[0].weight.grad.abs().sum() > 0 and float(loss["gradicon_phase"]) == step


def test_train_carl_end_to_end_and_weights_round_trip(tmp_path):
    from toporeg.models import load_model, register_architecture
    from toporeg.training.train_carl import main, translate
    assert torch.equal(translate(torch.arange(5.0).view(1, 1, 5), [2]), torch.tensor([[[2.0, 3.0, 4.0, 0.0, 0.0]]]))
    cfg = {"name": "tiny_carl", "ndim": 2, "model": {"channels": 8, "blocks": 1, "pad": 4, "unet_encoder": [4, 8],
                                                      "unet_final": [4]},
           "data": {"synthetic": 1.0}, "shape": [32, 32], "steps": 3, "batch_size": 2, "lr": 1e-3,
           "warmup_steps_diffusion": 2, "val_every": 2, "val_pairs": 1, "log_every": 1, "checkpoint_every": 0,
           "device": "cpu", "plot": False}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    assert main(["--config", str(path), "--out", str(tmp_path / "run")]) == 0
    register_architecture("CARL", CARL)
    model, card = load_model(tmp_path / "run" / "tiny_carl.safetensors")
    assert card["architecture"] == "CARL" and card["training"]["iterations"] == 3
    val = card["validation"]
    for key in ("dice", "translated_dice", "synthetic_translated_dice_before", "synthetic_translated_folding_percent"):
        assert key in val
    assert val["synthetic_translated_shift_voxels"] >= 0.125 * 32
    assert card["input_domain"]["shape"] == [32, 32] and card["method"].startswith("CARL")
    x = torch.rand((1, 1, 32, 32))
    assert model(x, x).shape == (1, 2, 32, 32)


def test_shipped_carl_configs_parse():
    from pathlib import Path

    from toporeg.training import common
    from toporeg.training.train_carl import CarlTrainConfig
    folder = Path(__file__).resolve().parents[1] / "TopoRegLib" / "src" / "toporeg" / "training" / "configs"
    for name, ndim in (("carl_2d_cpu", 2), ("carl_3d_2mm_cpu", 3)):
        cfg = common.load_config(CarlTrainConfig, folder / f"{name}.json")
        assert cfg.ndim == ndim and cfg.lam == 1.5 and cfg.schedule_by_time
        CARL(**{**cfg.model, "ndim": ndim})
