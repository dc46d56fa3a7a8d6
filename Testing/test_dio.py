"""DIO: twice-differentiable sampler, feature network, multi-scale solver, implicit gradients, prompts, trainer."""

from __future__ import annotations

import json

import pytest
import torch

from toporeg.dio import (DIOFeatureNet, LabelTerm, LandmarkTerm, SolverSettings, level_shape, linear_sample,
                         linear_warp, phantom_step, solve)
from toporeg.errors import CancelledError, InputError
from toporeg.filters import downsample, gaussian_smooth
from toporeg.transforms.jacobian import folding_fraction, jacobian_determinant
from toporeg.transforms.sampling import sample, warp


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):  # conftest: the solver's thousands of tiny ops are fastest on one thread
    yield


def _coords(shape_in, shape_out, generator, dtype=torch.float64):
    """Random non-integer coordinates from 1.5 voxels outside the grid to 1.5 beyond its end."""
    lo = torch.tensor([-1.5] * len(shape_in), dtype=dtype).view(1, -1, *[1] * len(shape_out))
    span = torch.tensor([n + 2.0 for n in shape_in], dtype=dtype).view(1, -1, *[1] * len(shape_out))
    return lo + span * torch.rand((2, len(shape_in), *shape_out), generator=generator, dtype=dtype)


@pytest.mark.parametrize("shape_in,shape_out", [((6, 7), (5, 4)), ((4, 5, 6), (3, 4, 2))])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_linear_sample_matches_grid_sample_values_and_gradients(shape_in, shape_out, padding):
    gen = torch.Generator().manual_seed(0)
    image = torch.randn((2, 3, *shape_in), generator=gen, dtype=torch.float64)
    coords = _coords(shape_in, shape_out, gen)
    weights = torch.randn((2, 3, *shape_out), generator=gen, dtype=torch.float64)
    grads = []
    for fn in (linear_sample, lambda im, c, p: sample(im, c, padding=p)):
        im, c = image.clone().requires_grad_(True), coords.clone().requires_grad_(True)
        out = fn(im, c, padding)
        grads.append((out.detach(), *torch.autograd.grad((out * weights).sum(), (im, c))))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # one coordinate set broadcasts over the batch; linear_warp is warp (image ∘ (id + u))
    torch.testing.assert_close(linear_sample(image, coords[:1], padding), sample(image, coords[:1], padding=padding))
    disp = 2.0 * torch.randn((1, len(shape_in), *shape_in), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(linear_warp(image, disp, padding), warp(image, disp, padding=padding))


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_linear_sample_gradcheck_and_gradgradcheck(padding):
    gen = torch.Generator().manual_seed(1)
    for shape_in, shape_out in (((3, 4), (2, 3)), ((3, 3, 2), (2, 2, 1))):
        image = torch.randn((1, 2, *shape_in), generator=gen, dtype=torch.float64, requires_grad=True)
        coords = _coords(shape_in, shape_out, gen)[:1].requires_grad_(True)
        fn = lambda im, c: linear_sample(im, c, padding)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (image, coords))
        assert torch.autograd.gradgradcheck(fn, (image, coords))


def _shifted_pair(n=40, shift=(2, -1), channels=4, seed=0, dtype=torch.float32):
    """Smooth random features and the same features translated: F_m(x + shift) = F_f(x); lists coarse -> fine."""
    gen = torch.Generator().manual_seed(seed)
    big = gaussian_smooth(torch.randn((1, channels, n + 8, n + 8), generator=gen, dtype=dtype), 2.0)
    big = big / big.std()
    f = big[:, :, 4:4 + n, 4:4 + n]
    m = big[:, :, 4 - shift[0]:4 - shift[0] + n, 4 - shift[1]:4 - shift[1] + n]
    return [downsample(f, s) for s in (4, 2, 1)], [downsample(m, s) for s in (4, 2, 1)]


@pytest.mark.parametrize("transform", ["displacement", "svf", "affine"])
def test_solver_recovers_a_translation(transform):
    fixed, moving = _shifted_pair()
    fractions = []
    result = solve(fixed, moving, SolverSettings(transform=transform), progress=lambda f, m: fractions.append(f))
    interior = result.displacement[0, :, 6:-6, 6:-6]
    assert result.displacement.shape == (1, 2, 40, 40) and len(result.losses) == 3
    torch.testing.assert_close(interior.mean((1, 2)), torch.tensor([2.0, -1.0]), atol=0.1, rtol=0)
    assert float(interior.std((1, 2)).max()) < 0.05
    assert result.losses[0][-1] < result.losses[0][0]
    assert fractions and fractions == sorted(fractions) and fractions[-1] <= 1.0
    back = result.inverse[0, :, 6:-6, 6:-6].mean((1, 2))
    torch.testing.assert_close(back, torch.tensor([-2.0, 1.0]), atol=0.1, rtol=0)
    if transform == "affine":
        torch.testing.assert_close(result.matrix[0, :2, 2], torch.tensor([2.0, -1.0]), atol=0.1, rtol=0)
        restarted = solve(fixed, moving, SolverSettings(transform="affine", iterations=(1, 1, 1), lr=1e-4),
                          initial=result.matrix[0])     # an initial matrix in finest-grid voxels is kept
        torch.testing.assert_close(restarted.matrix, result.matrix, atol=1e-2, rtol=0)


def test_svf_solver_does_not_fold_where_free_form_does():
    gen = torch.Generator().manual_seed(2)
    f, m = (gaussian_smooth(torch.randn((1, 4, 32, 32), generator=gen), 1.5) for _ in range(2))
    fixed, moving = [downsample(f, s) for s in (4, 2, 1)], [downsample(m, s) for s in (4, 2, 1)]
    free = solve(fixed, moving, SolverSettings(transform="displacement"))
    svf = solve(fixed, moving, SolverSettings(transform="svf"))
    assert folding_fraction(jacobian_determinant(free.displacement)) > 0.05  # unrelated features: a hard case
    assert folding_fraction(jacobian_determinant(svf.displacement)) == 0.0
    assert float(svf.displacement.abs().max()) > 3.0  # ... that the SVF did not dodge by standing still


def test_exact_implicit_gradient_matches_finite_differences_and_jfb_agrees():
    fixed, moving = _shifted_pair(n=16, shift=(1, -1), channels=3, seed=3, dtype=torch.float64)
    fixed, moving = fixed[1:], moving[1:]
    img_f, img_m = fixed[-1][:, 2:], moving[-1][:, 2:]       # the outer loss looks at another channel
    fixed, moving = [f[:, :2] for f in fixed], [m[:, :2] for m in moving]
    settings = SolverSettings(transform="affine", iterations=(30, 60), lr=0.25, newton_steps=8)

    def outer(disp):
        return ((linear_warp(img_m, disp, "border") - img_f) ** 2).mean()

    def full_solver(fine_moving):
        return outer(solve(fixed, moving[:-1] + [fine_moving], settings).displacement)

    result = solve(fixed, moving, settings)
    grads = {}
    for mode in ("exact", "jfb"):
        leaf = moving[-1].clone().requires_grad_(True)
        disp = phantom_step(fixed, moving[:-1] + [leaf], result, settings, exact=mode == "exact")[-1]
        if mode == "exact":
            # a Newton step at the optimum stays put
            assert float((disp.detach() - result.displacement).abs().max()) < 1e-2
        grads[mode], = torch.autograd.grad(outer(disp), leaf)
    exact = grads["exact"]
    order = exact.flatten().abs().argsort(descending=True)
    for flat_index in order[:3].tolist():
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), exact.shape))
        values = []
        for sign in (1.0, -1.0):
            bumped = moving[-1].clone()
            bumped[idx] += sign * 1e-4
            values.append(float(full_solver(bumped)))
        fd = (values[0] - values[1]) / 2e-4
        assert abs(fd - float(exact[idx])) < 0.05 * abs(fd), (idx, fd, float(exact[idx]))
    cosine = float((exact * grads["jfb"]).sum() / (exact.norm() * grads["jfb"].norm()))
    assert cosine > 0.3


def test_landmark_and_label_prompts_pull_the_solution():
    fixed, moving = _shifted_pair(n=32, shift=(2, -1), seed=4)
    settings = SolverSettings(transform="affine")
    points_f = torch.tensor([[8.0, 8.0], [20.0, 10.0], [12.0, 24.0], [24.0, 24.0]])
    points_m = points_f + torch.tensor([4.0, 1.0])                # the user says: the shift is (4, 1)
    term = LandmarkTerm(points_f, points_m, weight=1.0)
    plain = solve(fixed, moving, settings)
    prompted = solve(fixed, moving, settings, extra_terms=[term])
    assert float(term(prompted.displacement)) < 0.5 * float(term(plain.displacement))
    shift = prompted.matrix[0, :2, 2]
    assert float(shift[0]) > 2.5 and float(shift[1]) > -0.5        # moved from (2, -1) towards (4, 1)
    labels_f = torch.zeros((1, 1, 32, 32), dtype=torch.long)
    labels_f[..., 10:20, 10:20] = 1
    labels_m = torch.roll(labels_f, (4, 1), dims=(2, 3))           # a square moved by (4, 1)
    label_term = LabelTerm(labels_f, labels_m, weight=10.0)
    prompted = solve(fixed, moving, settings, extra_terms=[label_term])
    assert float(label_term(prompted.displacement)) < float(label_term(plain.displacement))
    with pytest.raises(InputError):
        LandmarkTerm(points_f, points_m[:2])


def test_feature_net_shapes_for_odd_sizes_and_size():
    for ndim, shape in ((2, (37, 50)), (3, (11, 13, 9))):
        net = DIOFeatureNet(ndim=ndim, channels=5, encoder=(4, 8, 8), decoder=(8, 8, 4), final_convs=(4,))
        image = torch.rand((2, 1, *shape))
        feats = net(image)
        assert [tuple(f.shape) for f in feats] == [(2, 5, *level_shape(shape, s)) for s in (4, 2, 1)]
        assert [f.shape[2:] for f in feats[:2]] == [downsample(image, s).shape[2:] for s in (4, 2)]
    assert level_shape((37, 50), 4) == (9, 12)
    assert sum(p.numel() for p in DIOFeatureNet(ndim=2).parameters()) < 200_000
    with pytest.raises(ValueError):
        DIOFeatureNet(scales=(1, 2))


def test_settings_are_validated_and_cancel_is_honoured():
    with pytest.raises(InputError):
        SolverSettings(transform="rigid")
    with pytest.raises(InputError):
        SolverSettings(lr=0)
    fixed, moving = _shifted_pair(n=16)
    with pytest.raises(InputError):
        solve(fixed, moving, SolverSettings(iterations=(5, 5)))
    with pytest.raises(CancelledError):
        solve(fixed, moving, SolverSettings(), should_stop=lambda: True)


def test_one_training_step_reaches_every_parameter_and_trainer_writes_a_card(tmp_path):
    from toporeg.dio.losses import LevelTargets, OuterLoss
    from toporeg.models.weights import load_model
    from toporeg.training.synth import SynthMorphPairs
    from toporeg.training.train_dio import DIOTrainConfig, features, train

    torch.manual_seed(0)
    tiny = {"channels": 4, "encoder": [4, 8, 8], "decoder": [8, 8, 4], "final_convs": [4]}
    net = DIOFeatureNet(ndim=2, **tiny)
    batch = SynthMorphPairs((32, 32), {"n_labels": 4}, seed=0).sample(2)
    settings = SolverSettings(iterations=(10, 10, 5))
    ff, fm = features(net, batch["fixed"], batch["moving"], "both")
    result = solve(ff, fm, settings)
    loss = OuterLoss()(phantom_step(ff, fm, result, settings), LevelTargets.build(batch, net.scales))
    loss["total"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0, name

    cfg = DIOTrainConfig(name="tiny_dio", model=tiny, solver={"iterations": [5, 5, 3]}, steps=3, batch_size=1,
                         data={"synthetic": 1.0}, shape=[32, 32], synth={"n_labels": 4}, val_pairs=1, val_every=0,
                         log_every=1, checkpoint_every=0, level_start=[0, 0, 0], device="cpu", plot=False)
    report = train(cfg, tmp_path)
    assert report["steps"] == 3 and 0.0 <= report["validation"]["dice_svf"] <= 1.0
    card = json.loads((tmp_path / "tiny_dio.json").read_text())
    assert card["architecture"] == "DIOFeatureNet" and card["solver"]["iterations"] == [5, 5, 3]
    assert card["task"] == "registration" and "DIO" in card["method"] and card["input_domain"]["spacing_mm"]
    model, _ = load_model(tmp_path / "tiny_dio.json")
    assert [f.shape[1] for f in model(torch.rand(1, 1, 20, 24))] == [4, 4, 4]
