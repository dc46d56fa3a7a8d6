"""Learned registration models: U-Net, VoxelMorph-diff, its KL loss, DeepSim, weights/cards, inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import smooth_blobs
from toporeg.errors import InputError
from toporeg.models import (DeepSimExtractor, DeepSimLoss, UNet, VoxelMorphDiff, VxmDiffLoss, VxmDiffOutput,
                            grid_degree, kl_laplacian, load_checkpoint, load_model, read_card, save_checkpoint,
                            save_model)
from toporeg.transforms import compose, warp

TINY = dict(encoder=(8, 8, 8), decoder=(8, 8), final_convs=(8,))


def _pair_2d(shape=(32, 32), shift=2.0, seed=0):
    """fixed = a phantom with soft edges; moving(x) = fixed(x - shift along axis 0): the true field is u = +shift."""
    img = smooth_blobs(shape, seed=seed, n=12)
    levels = np.tanh(6.0 * (img / img.max() - 0.3)) + np.tanh(6.0 * (img / img.max() - 0.65))
    fixed = torch.as_tensor((levels - levels.min()) / (levels.max() - levels.min()), dtype=torch.float32)[None, None]
    disp = torch.zeros(1, 2, *shape)
    disp[:, 0] = -shift
    moving = warp(fixed, disp, padding="border")
    return moving, fixed


def test_unet_levels_and_shapes():
    net = UNet(3, 2, (4, 8, 8), output_level=1, final_convs=(6,))
    x = torch.rand(1, 2, 16, 24, 8)
    assert [f.shape[2:] for f in net.encode(x)] == [(8, 12, 4), (4, 6, 2), (2, 3, 1)]
    assert net(x).shape == (1, 6, 8, 12, 4)
    ae = UNet(2, 1, (4, 8), skips=False, down_kernel=4, convs_per_stage=2)
    assert ae(torch.rand(2, 1, 16, 16)).shape == (2, ae.out_channels, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(1, 2, 10, 24, 8))
    ae = DeepSimExtractor(2, 1, (4, 8), kind="ae")              # DeepSim-ae: no skips, sigmoid output
    with torch.no_grad():
        rec = ae(torch.rand(1, 1, 16, 16))
    assert rec.shape == (1, 1, 16, 16) and 0 < float(rec.min()) and float(rec.max()) < 1
    assert not ae.unet.skips and [f.shape[1] for f in ae.features(torch.rand(1, 1, 16, 16))] == [4, 8]


def test_vxm_diff_outputs_and_initialisation():
    torch.manual_seed(0)
    net = VoxelMorphDiff(2, **TINY)
    m, f = torch.rand(2, 1, 32, 24), torch.rand(2, 1, 32, 24)
    out = net.eval()(m, f, return_inverse=True)
    assert isinstance(out, VxmDiffOutput)
    assert out.velocity_mean.shape == (2, 2, 16, 12) and out.displacement.shape == (2, 2, 32, 24)
    assert torch.allclose(out.velocity_logvar, torch.full_like(out.velocity_logvar, -10.0), atol=1e-6)
    assert out.velocity_mean.abs().max() < 1e-3             # mean head ~N(0, 1e-5)
    assert torch.equal(out.velocity, out.velocity_mean)     # eval: the mean
    var = out.uncertainty()
    assert var.shape == (2, 1, 32, 24) and torch.allclose(var, torch.full_like(var, 2 * 4 * np.exp(-10.0)), rtol=1e-4)
    net.train()
    assert not torch.equal(net(m, f).velocity, net(m, f).velocity)  # one reparameterised sample per call


def test_velocity_is_upsampled_and_rescaled_and_inverse_is_exp_minus_v():
    net = VoxelMorphDiff(2, **TINY)
    v = torch.zeros(1, 2, 16, 16)
    v[:, 1] = 0.75                                           # half-resolution voxels
    disp = net.integrate(v, (32, 32))
    assert torch.allclose(disp[:, 1], torch.full((1, 32, 32), 0.75 * 31 / 15), atol=1e-4)  # ×(N−1)/(n−1) ≈ 2
    vs = torch.as_tensor(smooth_blobs((16, 16), seed=3, n=3)) * 0.8
    vel = torch.stack([vs, -vs.T])[None]
    fwd, inv = net.integrate(vel, (32, 32)), net.integrate(-vel, (32, 32))
    assert compose(fwd, inv)[..., 4:-4, 4:-4].abs().max() < 0.1   # fields of up to ~3 voxels


def test_kl_matches_dense_laplacian_computation():
    torch.manual_seed(1)
    shape, lam = (4, 5), 7.0
    mean, logvar = torch.randn(1, 2, *shape), torch.randn(1, 2, *shape) * 0.3 - 2.0
    n = shape[0] * shape[1]
    adj = np.zeros((n, n))
    for i in range(shape[0]):
        for j in range(shape[1]):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < shape[0] and j + dj < shape[1]:
                    a, b = i * shape[1] + j, (i + di) * shape[1] + j + dj
                    adj[a, b] = adj[b, a] = 1
    lap = np.diag(adj.sum(1)) - adj
    assert np.array_equal(grid_degree(shape)[0, 0].numpy().ravel(), adj.sum(1))
    expected = 0.0
    for c in range(2):
        mu, s = mean[0, c].double().numpy().ravel(), logvar[0, c].double().exp().numpy().ravel()
        expected += 0.5 * (np.trace(lam * lap @ np.diag(s)) - np.log(s).sum() + mu @ (lam * lap) @ mu)
    sigma_term, smooth_term = kl_laplacian(mean.double(), logvar.double(), lam)
    assert float(sigma_term + smooth_term) == pytest.approx(expected, rel=1e-10)
    # the variance optimum of the prior alone is s = 1 / (λ D)
    s_opt = 1.0 / (lam * grid_degree(shape))
    lv = s_opt.log().expand(1, 2, *shape).clone().requires_grad_(True)
    kl_laplacian(mean, lv, lam)[0].backward()
    assert lv.grad.abs().max() < 1e-5


def test_loss_terms_and_bidirectional():
    net = VoxelMorphDiff(2, **TINY).train()
    m, f = _pair_2d()
    loss = VxmDiffLoss(bidirectional=True)(net(m, f, return_inverse=True), m, f)
    assert {"total", "image", "image_forward", "image_inverse", "kl", "kl_sigma", "kl_smooth"} <= set(loss)
    loss = {k: float(v.detach()) for k, v in loss.items()}
    assert loss["image"] == pytest.approx(0.5 * (loss["image_forward"] + loss["image_inverse"]))
    assert loss["image_forward"] == pytest.approx(float(((m - f) ** 2).mean() / 0.04), rel=0.05)


def test_one_training_step_reduces_the_loss():
    torch.manual_seed(0)
    net = VoxelMorphDiff(2, **TINY)
    m, f = _pair_2d()
    loss_fn = VxmDiffLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def evaluate():
        with torch.no_grad():
            return float(loss_fn(net(m, f, sample=False), m, f)["total"])

    before = evaluate()
    net.train()
    opt.zero_grad()
    loss_fn(net(m, f), m, f)["total"].backward()
    opt.step()
    assert evaluate() < before


def test_learns_a_translation_2d():
    torch.manual_seed(0)
    net = VoxelMorphDiff(2, encoder=(8, 16, 16), decoder=(16, 16), final_convs=(16,))
    m, f = _pair_2d(shift=2.0)
    loss_fn = VxmDiffLoss()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40)
    net.train()
    for _ in range(40):
        opt.zero_grad()
        loss_fn(net(m, f), m, f)["total"].backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = net.eval()(m, f)
    inner = out.displacement[0, :, 8:-8, 8:-8]
    assert float(inner[0].mean()) == pytest.approx(2.0, abs=0.5)
    assert float(inner[1].abs().mean()) < 0.5
    assert float(((out.warped - f) ** 2).mean()) < 0.2 * float(((m - f) ** 2).mean())


def _homogeneous_extractor(ndim=2):
    """No biases, no BatchNorm, LeakyReLU: F(αx) = αF(x) for α > 0, so the cosine is exactly scale-invariant
    wherever feature norms stay above the sqrt(1e-6) clamp. Gain-preserving (Kaiming) weights keep them O(1);
    PyTorch's default init shrinks them ~4x per layer, towards the clamp."""
    torch.manual_seed(0)
    ex = DeepSimExtractor(ndim, 1, (4, 8, 8), batch_norm=False, bias=False)
    for m in ex.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
    return ex


def test_deepsim_zero_for_identical_and_scale_invariant():
    ex = _homogeneous_extractor()
    loss = DeepSimLoss(ex)
    img = 0.2 + torch.as_tensor(smooth_blobs((32, 32), seed=1))[None, None]  # no zero region: features ≠ 0
    other = 0.2 + torch.as_tensor(smooth_blobs((32, 32), seed=2))[None, None]
    assert float(loss(img, img)) == pytest.approx(0.0, abs=1e-6)
    base = float(loss(other, img))
    assert base > 1e-3
    assert float(loss(3.7 * other, img)) == pytest.approx(base, abs=1e-5)
    assert float(loss(other, 0.25 * img)) == pytest.approx(base, abs=1e-5)


def test_deepsim_is_frozen_but_passes_gradients_and_registers():
    ex = _homogeneous_extractor()
    img = 0.2 + torch.as_tensor(smooth_blobs((32, 32), seed=1))[None, None]
    moving = (0.2 + torch.as_tensor(smooth_blobs((32, 32), seed=2))[None, None]).requires_grad_(True)
    DeepSimLoss(ex)(moving, img).backward()
    assert moving.grad is not None and moving.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in ex.parameters())
    assert not ex.training
    from toporeg.models import enable_deepsim
    from toporeg.registration import available_similarities, make_similarity
    enable_deepsim(ex)
    assert "deepsim" in available_similarities()
    sim = make_similarity("deepsim", levels=[1, 2])
    assert float(sim(img, img)) == pytest.approx(0.0, abs=1e-6)


def test_weights_round_trip_card_and_tamper_refusal(tmp_path):
    torch.manual_seed(0)
    net = VoxelMorphDiff(2, **TINY)
    with torch.no_grad():
        net.mean_head.weight.normal_()
    weights, card_path = save_model(net, tmp_path / "m.safetensors",
                                    {"input_domain": {"modality": "T1w"}, "converged": "no"})
    card = read_card(card_path)
    assert card["architecture"] == "VoxelMorphDiff" and card["kwargs"]["ndim"] == 2 and len(card["sha256"]) == 64
    loaded, card2 = load_model(card_path)
    m, f = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded(m, f).displacement, net.eval()(m, f).displacement)
    assert card2["input_domain"] == {"modality": "T1w"}
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256"):
        load_model(weights)
    (tmp_path / "x.json").write_text(json.dumps({"weights": "missing.safetensors", "sha256": "0"}), encoding="utf-8")
    with pytest.raises(InputError, match="missing"):
        load_model(tmp_path / "x.json")


def test_checkpoint_round_trip_with_optimizer_state(tmp_path):
    torch.manual_seed(0)
    net = DeepSimExtractor(2, 1, (4, 4), batch_norm=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.rand(2, 1, 16, 16)).square().mean().backward()
        opt.step()
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path / "c.safetensors", net, opt, meta={"step": 2}, tensors={"rng": rng})
    net2 = DeepSimExtractor(2, 1, (4, 4), batch_norm=True)
    opt2 = torch.optim.Adam(net2.parameters(), lr=5.0)
    meta, extra = load_checkpoint(tmp_path / "c.safetensors", net2, opt2)
    assert meta == {"step": 2} and torch.equal(extra["rng"], rng)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])


class _ConstantVelocity(torch.nn.Module):
    """Stands in for a trained model: a constant velocity (model-grid half-resolution voxels)."""

    def __init__(self, v):
        super().__init__()
        self.inner = VoxelMorphDiff(3, **TINY)
        self.ndim, self.int_steps, self.v = 3, 7, torch.tensor(v, dtype=torch.float32)

    def integrate(self, velocity, shape, steps=None):
        return self.inner.integrate(velocity, shape, steps)

    def forward(self, moving, fixed, sample=False, int_steps=None, return_inverse=False):
        shape = [n // 2 for n in moving.shape[2:]]
        mean = self.v.view(1, 3, 1, 1, 1).expand(1, 3, *shape).clone()
        disp = self.integrate(mean, moving.shape[2:])
        return VxmDiffOutput(mean, torch.full_like(mean, -10.0), mean, disp, warp(moving, disp))


def test_learned_register_maps_the_network_field_to_the_native_grid():
    from toporeg.io import Volume
    from toporeg.models import learned_register
    from toporeg.registration import RegistrationSettings

    aff = np.diag([2.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-30.0, -20.0, -10.0]
    fixed = Volume(smooth_blobs((20, 24, 16), seed=0), aff)
    moving = Volume(smooth_blobs((20, 24, 16), seed=1), aff)
    card = {"name": "const", "input_domain": {"shape": [16, 16, 16], "spacing_mm": [2.0, 2.0, 2.0]}}
    v = [0.5, -0.25, 0.0]
    res = learned_register(fixed, moving, _ConstantVelocity(v), card=card, device="cpu",
                           affine_settings=RegistrationSettings(affine_levels=(2,), affine_iterations=(3,)))
    t_mm = 2.0 * np.array(v) * 15 / 7       # half-res voxels → model voxels (×15/7) → mm (×2)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.grid_shape], indexing="ij"), -1).reshape(-1, 3)
    pts = fixed.voxel_to_ras(ijk) + t_mm
    expected = moving.ras_to_voxel(pts @ res.affine_ras[:3, :3].T + res.affine_ras[:3, 3])
    got = res.moving_coords[0].reshape(3, -1).T.numpy()
    assert np.abs(got - expected).max() < 1e-3
    assert res.displacement_ras.shape == (20, 24, 16, 3) and res.inverse_displacement_ras.shape == (20, 24, 16, 3)
    # inverse: moving point q ↦ T⁻¹q − t (on the moving grid)
    q = moving.voxel_to_ras(ijk)
    inv_t = np.linalg.inv(res.affine_ras)
    expected_inv = (q @ inv_t[:3, :3].T + inv_t[:3, 3]) - t_mm - q
    assert np.abs(res.inverse_displacement_ras.reshape(-1, 3) - expected_inv).max() < 1e-3
    assert res.folding_fraction == 0.0 and res.uncertainty.data.shape == (20, 24, 16)
    assert res.settings["method"] == "learned" and "uncertainty_mean_mm2" in res.summary()
