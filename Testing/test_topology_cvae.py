"""The topology CVAE (issue #5): a training step lowers the negative ELBO, its running prior feeds the pair fit,
weights round-trip (and tampering is refused), semantic features come out at full resolution."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import smooth_velocity, textured_phantom
from toporeg.errors import InputError
from toporeg.topology.prior import PriorParameters
from toporeg.transforms.sampling import warp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)[None, None]


TINY = {"encoder": (8, 8, 8, 8), "decoder": (8, 8, 8, 8), "final_convs": (8,)}


def tiny_cvae(**kw):
    from toporeg.topology.cvae import TopologyCVAE
    torch.manual_seed(0)
    return TopologyCVAE(2, **TINY, **kw)


def healthy_batch(shape=(32, 32), n=2):
    """Pairs with the same topology: a phantom and a smooth warp of it."""
    moving = torch.cat([_t(textured_phantom(shape, seed=s)) for s in range(n)])
    u = torch.cat([smooth_velocity(shape, magnitude=1.5, seed=10 + s, sigma=4.0) for s in range(n)])
    return warp(moving, u, padding="border"), moving


def test_cvae_training_step_reduces_the_negative_elbo():
    model = tiny_cvae().train()
    fixed, moving = healthy_batch((16, 16))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(123)  # the same reparameterisation noise for both evaluations
        return model.negative_elbo(fixed, moving)["total"]

    before = loss()
    assert torch.isfinite(before)
    optimiser.zero_grad()
    before.backward()
    assert all(p.grad is not None for p in (model.mean_head.weight, model.logvar_head.bias, model.log_sigma2))
    optimiser.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())
    terms = model.negative_elbo(fixed, moving)
    assert {"total", "reconstruction", "kl", "alpha", "beta"} <= set(terms)
    assert float(terms["alpha"]) > 0 and float(terms["beta"]) > 0


def test_cvae_running_prior_and_fit_pair():
    model = tiny_cvae()
    fixed, moving = healthy_batch((17, 19), n=1)  # odd sizes: fit_pair pads for the U-Net and crops back
    assert not torch.isfinite(model.alpha)
    with pytest.raises(RuntimeError, match="never trained"):
        model.fit_pair(fixed, moving)
    model.eval()
    big_f, big_m = healthy_batch((16, 16))
    model.negative_elbo(big_f, big_m)  # eval mode: the running α, β are left alone
    assert not torch.isfinite(model.alpha)
    model.train()
    out = model.negative_elbo(big_f, big_m)
    assert float(model.alpha) == pytest.approx(float(out["alpha"])) and float(model.beta) == pytest.approx(
        float(out["beta"]))
    first = PriorParameters(float(model.alpha), float(model.beta))
    model.update_prior(PriorParameters(2 * first.alpha, 3 * first.beta))  # running mean, momentum m
    m = model.prior_momentum
    assert float(model.alpha) == pytest.approx(first.alpha * (1 + m))
    assert float(model.beta) == pytest.approx(first.beta * (1 + 2 * m))
    assert model.training
    fit = model.fit_pair(fixed, moving)
    assert model.training  # restored
    assert fit.mu.shape == (1, 2, 17, 19) and fit.var.shape == (1, 2, 17, 19) and fit.score.shape == (17, 19)
    for t in (fit.mu, fit.var, fit.score):
        assert torch.all(torch.isfinite(t))
    assert torch.all(fit.var > 0)
    assert fit.prior.alpha == float(model.alpha) and fit.prior.beta == float(model.beta)  # running values used


def test_cvae_weights_round_trip_and_tamper_refusal(tmp_path):
    from toporeg.models.weights import load_model, save_model
    from toporeg.topology.cvae import TopologyCVAE, load_topology_model

    model = tiny_cvae().train()
    model.negative_elbo(*healthy_batch((16, 16)))
    model.eval()
    fixed, moving = healthy_batch((20, 18), n=1)
    expected = model.fit_pair(fixed, moving)
    weights, card = save_model(model, tmp_path / "topo_tiny", {"task": "topology"})
    assert json.loads(card.read_text(encoding="utf-8"))["sha256"]
    loaded, card_data = load_model(weights)
    assert isinstance(loaded, TopologyCVAE) and card_data["architecture"] == "TopologyCVAE"
    again = loaded.fit_pair(fixed, moving)
    assert float(loaded.alpha) == float(model.alpha) and float(loaded.beta) == float(model.beta)
    assert torch.equal(again.mu, expected.mu) and torch.equal(again.score, expected.score)
    loaded2, _ = load_topology_model(weights)
    assert torch.equal(loaded2.fit_pair(fixed, moving).score, expected.score)
    # a modified weights file is refused
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256"):
        load_model(weights)


def test_semantic_cvae_features_at_full_resolution_for_odd_sizes():
    extractor = {"ndim": 2, "channels": [4, 6, 8, 8]}
    model = tiny_cvae(features="semantic", extractor=extractor)
    assert model.log_sigma2.numel() == 4 + 6 + 8
    assert not any(p.requires_grad for p in model.extractor.parameters())
    model.train()
    assert not model.extractor.training  # frozen, batch-norm statistics included
    features = model.feature_map()
    image = _t(textured_phantom((17, 23), seed=2))
    f = features(image)
    assert f.shape == (1, 18, 17, 23) and torch.all(torch.isfinite(f))
    # the first channels are the first encoder stage, upsampled: not constant across the image
    assert float(f[0, :4].std()) > 0
    fixed, moving = healthy_batch((16, 16), n=2)
    model.negative_elbo(fixed, moving)
    fit = model.fit_pair(warp(image, smooth_velocity((17, 23), 1.0, seed=3)), image)
    assert fit.score.shape == (17, 23) and torch.all(torch.isfinite(fit.score)) and fit.sigma2.numel() == 18
    with pytest.raises(ValueError):
        tiny_cvae(features="semantic")
