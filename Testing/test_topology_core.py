"""Topology heatmaps (issue #5): the learnable Laplacian prior against dense linear algebra, the Gauss–Newton variance,
displacement inversion, L_sym / Q properties on phantoms, display mapping and the Volume-level pipeline
(the CVAE: test_topology_cvae.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from conftest import oblique_affine, smooth_velocity, textured_phantom
from toporeg.errors import InputError
from toporeg.io import Volume
from toporeg.topology.elbo import gauss_newton_variance
from toporeg.topology.features import IntensityFeatures
from toporeg.topology.optimize import fit_pair
from toporeg.topology.pipeline import TopologySettings, display_map, topology_heatmap
from toporeg.topology.prior import (PriorParameters, edge_energy_per_voxel, fit_alpha_beta, kl_per_voxel,
                                    log_pdet_grid_laplacian)
from toporeg.topology.score import bring_to_fixed, control_set_baselines, outlier_score, symmetric_score
from toporeg.transforms.integration import invert_displacement
from toporeg.transforms.sampling import warp

SMALL_SHAPES = [(4, 5), (6, 3), (3, 4, 3), (2, 3, 4)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- dense references ---------------------------------------------------------------------------------------------

def grid_edges(shape) -> list[tuple[int, int]]:
    """Face-neighbour edges of a grid, as pairs of C-order flat indices."""
    index = np.arange(math.prod(shape)).reshape(shape)
    edges = []
    for axis in range(len(shape)):
        a = np.take(index, np.arange(shape[axis] - 1), axis=axis).ravel()
        b = np.take(index, np.arange(1, shape[axis]), axis=axis).ravel()
        edges += list(zip(a.tolist(), b.tolist()))
    return edges


def dense_laplacian(shape) -> np.ndarray:
    n = math.prod(shape)
    lap = np.zeros((n, n))
    for a, b in grid_edges(shape):
        lap[a, a] += 1
        lap[b, b] += 1
        lap[a, b] -= 1
        lap[b, a] -= 1
    return lap


def dense_kl(mu: np.ndarray, var: np.ndarray, alpha: float, beta: float) -> float:
    """Σ_{b,d} KL(N(μ_bd, diag v_bd) ‖ N(0, P⁻¹)), P = αΛ + β/n²·11ᵀ, by dense linear algebra (float64)."""
    shape = mu.shape[2:]
    n = math.prod(shape)
    precision = alpha * dense_laplacian(shape) + beta / n**2 * np.ones((n, n))
    sign, logdet_p = np.linalg.slogdet(precision)
    assert sign > 0
    total = 0.0
    for b, d in itertools.product(range(mu.shape[0]), range(mu.shape[1])):
        m, v = mu[b, d].ravel(), var[b, d].ravel()
        total += 0.5 * (np.sum(np.diag(precision) * v) + m @ precision @ m - n - np.log(v).sum() - logdet_p)
    return total


def random_q(shape, batch=1, seed=0):
    """(μ, v) float64 with a non-zero mean displacement (so β matters)."""
    gen = torch.Generator().manual_seed(seed)
    nd = len(shape)
    mu = 0.7 * torch.randn((batch, nd, *shape), generator=gen, dtype=torch.float64) + 0.4
    var = torch.rand((batch, nd, *shape), generator=gen, dtype=torch.float64) * 0.5 + 0.05
    return mu, var


# --- prior ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_log_pdet_matches_dense_eigenvalues(shape):
    eig = np.linalg.eigvalsh(dense_laplacian(shape))
    nonzero = eig[eig > 1e-9]
    assert len(nonzero) == math.prod(shape) - 1  # one connected component
    assert log_pdet_grid_laplacian(shape) == pytest.approx(np.log(nonzero).sum(), rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (3.7, 0.2), (0.05, 40.0)])
def test_kl_per_voxel_sums_to_the_dense_gaussian_kl(shape, alpha, beta):
    mu, var = random_q(shape, batch=2, seed=len(shape))
    per_voxel = kl_per_voxel(mu, var, PriorParameters(alpha, beta))
    assert per_voxel.shape == (2, *shape) and per_voxel.dtype == torch.float64
    expected = dense_kl(mu.numpy(), var.numpy(), alpha, beta)
    assert float(per_voxel.sum()) == pytest.approx(expected, rel=1e-9, abs=1e-8)
    # an explicit log pdet gives the same answer
    again = kl_per_voxel(mu, var, PriorParameters(alpha, beta), log_pdet=log_pdet_grid_laplacian(shape))
    assert torch.allclose(again, per_voxel)


@pytest.mark.parametrize("shape,batch", [((4, 5), 1), ((4, 5), 2), ((3, 4, 3), 1), ((3, 4, 3), 2)])
def test_closed_form_alpha_beta_is_the_numerical_optimum_of_the_dense_kl(shape, batch):
    mu, var = random_q(shape, batch=batch, seed=7 + batch)
    fitted = fit_alpha_beta(mu, var)
    m, v = mu.numpy(), var.numpy()

    def objective(log_ab):
        return dense_kl(m, v, math.exp(log_ab[0]), math.exp(log_ab[1]))

    try:
        from scipy.optimize import minimize
        res = minimize(objective, x0=np.zeros(2), method="Nelder-Mead",
                       options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        log_a, log_b = res.x
    except ImportError:  # pragma: no cover - scipy is a test dependency, keep a fallback anyway
        grid = np.linspace(-6, 6, 241)
        values = np.array([[objective((a, b)) for b in grid] for a in grid])
        ia, ib = np.unravel_index(values.argmin(), values.shape)
        log_a, log_b = grid[ia], grid[ib]
    assert math.log(fitted.alpha) == pytest.approx(log_a, abs=1e-3)
    assert math.log(fitted.beta) == pytest.approx(log_b, abs=1e-3)
    # and it is a minimum: moving either parameter away increases the KL
    base = objective((math.log(fitted.alpha), math.log(fitted.beta)))
    for da, db in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):
        assert objective((math.log(fitted.alpha) + da, math.log(fitted.beta) + db)) > base


@pytest.mark.parametrize("shape", [(5, 6), (3, 4, 5)])
def test_edge_energy_per_voxel_sums_to_the_edge_sum(shape):
    mu, _ = random_q(shape, batch=2, seed=3)
    per_voxel = edge_energy_per_voxel(mu)
    assert per_voxel.shape == (2, *shape)
    for b in range(2):
        flat = mu[b].reshape(mu.shape[1], -1).numpy()
        expected = sum(((flat[:, i] - flat[:, j]) ** 2).sum() for i, j in grid_edges(shape))
        assert float(per_voxel[b].sum()) == pytest.approx(expected, rel=1e-12)
    # a constant field has no edge energy; a single spike shares each edge half-half with its neighbours
    spike = torch.zeros((1, len(shape), *shape), dtype=torch.float64)
    centre = tuple(s // 2 for s in shape)
    spike[(0, 0, *centre)] = 2.0
    e = edge_energy_per_voxel(spike)[0]
    assert float(e[centre]) == pytest.approx(0.5 * 4.0 * 2 * len(shape))
    assert float(e.sum()) == pytest.approx(4.0 * 2 * len(shape))


# --- Gauss–Newton variance -----------------------------------------------------------------------------------

def test_gauss_newton_variance_is_prior_only_where_features_are_flat_and_small_at_edges():
    shape = (16, 20)
    n = math.prod(shape)
    prior = PriorParameters(2.5, 30.0)
    sigma2 = torch.tensor([0.01])
    flat = torch.full((1, 1, *shape), 0.3)
    var = gauss_newton_variance(flat, sigma2, prior)
    deg = np.full(shape, 4.0)
    deg[0, :] -= 1
    deg[-1, :] -= 1
    deg[:, 0] -= 1
    deg[:, -1] -= 1
    expected = torch.as_tensor(1.0 / (prior.alpha * deg + prior.beta / n**2), dtype=torch.float32)
    assert var.shape == (1, 2, *shape)
    assert torch.allclose(var[0, 0], expected, rtol=1e-5) and torch.allclose(var[0, 1], expected, rtol=1e-5)
    # a vertical step edge along axis 0: axis-0 variance collapses at the edge, axis 1 unaffected
    step = flat.clone()
    step[:, :, 8:] = 1.0
    var = gauss_newton_variance(step, sigma2, prior)
    g = (1.0 - 0.3) / 2  # central difference at the two voxels beside the step
    for i in (7, 8):
        exact = 1.0 / (prior.alpha * 4 + prior.beta / n**2 + g**2 / 0.01)
        assert float(var[0, 0, i, 10]) == pytest.approx(exact, rel=1e-5)
        assert float(var[0, 0, i, 10]) < 0.5 * float(expected[i, 10])
    assert torch.allclose(var[0, 1], expected, rtol=1e-5)
    assert torch.allclose(var[0, 0, 2], expected[2], rtol=1e-5)  # away from the edge: prior only
    # larger gradient → smaller variance (monotone in the data precision)
    steeper = flat.clone()
    steeper[:, :, 8:] = 2.0
    assert float(gauss_newton_variance(steeper, sigma2, prior)[0, 0, 8, 10]) < float(var[0, 0, 8, 10])


# --- displacement inversion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 20), (12, 14, 10)])
def test_invert_displacement_translation_and_smooth_field(shape):
    nd = len(shape)
    shift = torch.tensor([1.5, -0.75, 0.5][:nd]).view(1, nd, *([1] * nd)).expand(1, nd, *shape).contiguous()
    inv = invert_displacement(shift)
    inner = (slice(None), slice(None), *[slice(3, s - 3) for s in shape])
    assert torch.allclose(inv[inner], -shift[inner], atol=1e-5)

    u = smooth_velocity(shape, magnitude=1.5, seed=2, sigma=2.0)
    w = invert_displacement(u)
    # φ∘φ⁻¹ = id: y = x + w(x), y + u(y) = x
    residual = w + warp(u, w, padding="border")
    assert float(residual[inner].abs().max()) < 0.05
    naive = -u + warp(u, -u, padding="border")  # −u is not the inverse of a non-constant field
    assert float(naive[inner].abs().max()) > 0.05


# --- heatmaps on phantoms (training-free fit, intensity features) ------------------------------------------------

DEFAULTS = TopologySettings()  # the pipeline's fit budget: what a user gets


def fitter(iterations: int = DEFAULTS.iterations, lr: float = DEFAULTS.learning_rate):
    features = IntensityFeatures()
    return lambda j, i, init, progress: fit_pair(j, i, features, init_mu=init, iterations=iterations, lr=lr,
                                                 progress=progress)


def disk(shape, centre, radius) -> torch.Tensor:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return torch.as_tensor(sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius**2)


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)[None, None]


def with_blob(image: torch.Tensor, mask: torch.Tensor, value: float = 1.3) -> torch.Tensor:
    """A new structure of its own intensity: no smooth deformation of the other image produces it."""
    out = image.clone()
    out[0, 0][mask] = value
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Pixel-wise ROC AUC (Mann–Whitney), ties counted half."""
    pos, neg = scores[labels], scores[~labels]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size))


SHAPE2D = (16, 20)


@pytest.fixture(scope="module")
def blob_case():
    """J = (I + blob)∘φ + noise, I a textured phantom; L_sym(J|I) and the blob on J's grid."""
    image = _t(textured_phantom(SHAPE2D, seed=1))
    blob = disk(SHAPE2D, (8, 10), 3.2)
    u = smooth_velocity(SHAPE2D, magnitude=1.0, seed=7, sigma=4.0)
    fixed = warp(with_blob(image, blob), u, padding="border")
    fixed = fixed + 0.02 * torch.randn(fixed.shape, generator=torch.Generator().manual_seed(0))
    blob_on_fixed = warp(blob[None, None].float(), u)[0, 0] > 0.5
    pair = symmetric_score(fixed, image, fitter(iterations=20))
    return pair.l_sym.numpy(), blob_on_fixed.numpy(), image


def test_identical_images_give_a_flat_low_map(blob_case):
    changed, _blob, image = blob_case
    pair = symmetric_score(image, image.clone(), fitter())
    flat = pair.l_sym.numpy()
    assert flat.shape == SHAPE2D and np.all(np.isfinite(flat))
    assert flat.std() < 0.1 * changed.std()
    assert flat.max() - np.median(flat) < 2.0  # nats: no hot spot (display value < 0.33)
    assert np.median(flat) < np.median(changed)
    assert float(pair.forward.mu.abs().max()) < 0.1  # nothing to move
    display, _ = display_map(flat, np.ones(SHAPE2D, bool))
    assert display.max() < 0.35


def test_inserted_blob_raises_the_score_inside_it(blob_case):
    heat, blob, _ = blob_case
    assert blob.sum() > 20
    inside, outside = heat[blob], heat[~blob]
    assert inside.mean() > np.percentile(outside, 95)
    assert np.median(inside) > np.percentile(outside, 99)
    assert auc(heat.ravel(), blob.ravel()) > 0.95


def test_l_sym_symmetry_for_an_invertible_pair():
    """L_sym(I|J) = L_sym(J|I)∘Φ_{I→J} when the two fitted mappings are (nearly) inverse (Sec. 3 of the paper).
    The pair is related by a smooth invertible φ; a blob gives both maps structure to compare."""
    shape = (24, 28)
    image = _t(textured_phantom(shape, seed=3))
    u = smooth_velocity(shape, magnitude=1.5, seed=4, sigma=3.0)
    other = warp(with_blob(image, disk(shape, (12, 15), 3.0)), u, padding="border")
    fit = fitter(iterations=20)
    ji = symmetric_score(other, image, fit)   # L_sym(J|I) on J's grid
    ij = symmetric_score(image, other, fit)   # L_sym(I|J) on I's grid, Φ_{I→J} = ij.forward.mu
    lhs = ij.l_sym
    rhs = bring_to_fixed(ji.l_sym, ij.forward.mu)
    inner = (slice(3, -3), slice(3, -3))
    corr = np.corrcoef(lhs[inner].flatten().numpy(), rhs[inner].flatten().numpy())[0, 1]
    assert corr > 0.9
    # the comparison can fail: without mapping through Φ_{I→J} the maps do not agree
    unmapped = np.corrcoef(lhs[inner].flatten().numpy(), ji.l_sym[inner].flatten().numpy())[0, 1]
    assert unmapped < corr - 0.15


def test_outlier_score_of_a_control_is_centred_near_zero():
    shape = (24, 28)
    base = _t(textured_phantom(shape, seed=5))
    blob = disk(shape, (12, 14), 3.2)

    def draw(seed, lesion=False):
        u = smooth_velocity(shape, magnitude=1.0, seed=seed, sigma=4.0)
        noise = 0.02 * torch.randn(base.shape, generator=torch.Generator().manual_seed(100 + seed))
        img = with_blob(base, blob) if lesion else base
        return warp(img, u, padding="border") + noise, warp(blob[None, None].float(), u)[0, 0] > 0.5

    fit = fitter(iterations=5)
    controls = [draw(1)[0], draw(2)[0]]
    baselines = control_set_baselines(controls, fit)
    assert len(baselines) == 2 and baselines[0].shape == shape
    q_control, _ = outlier_score(draw(3)[0], controls, fit, control_baselines=baselines)
    lesion, lesion_mask = draw(4, lesion=True)
    q_lesion, _ = outlier_score(lesion, controls, fit, control_baselines=baselines)
    assert np.all(np.isfinite(q_control.numpy())) and q_control.shape == shape
    inside = float(q_lesion[lesion_mask].median())
    assert inside > 10.0
    assert abs(float(q_control.median())) < 0.02 * inside
    assert abs(float(q_control.median())) < 0.3
    assert abs(float(q_lesion[~lesion_mask].median())) < 0.5  # healthy tissue of the lesion image: also ~0
    with pytest.raises(ValueError):
        outlier_score(lesion, controls[:1], fit)


# --- display mapping --------------------------------------------------------------------------------------------

def test_display_map_is_a_fixed_monotone_mapping_with_a_legend():
    rng = np.random.default_rng(0)
    heat = rng.normal(-3.0, 2.0, (16, 20)).astype(np.float32)
    heat[5:8, 5:8] += 40.0
    foreground = np.zeros(heat.shape, bool)
    foreground[2:14, 2:18] = True
    display, legend = display_map(heat, foreground)
    m = float(np.median(heat[foreground]))
    assert display.dtype == np.float32 and display.shape == heat.shape
    assert 0.0 <= display.min() and display.max() <= 1.0
    assert np.all(display[heat <= m] == 0.0)
    order = np.argsort(heat.ravel())
    assert np.all(np.diff(display.ravel()[order]) >= 0)  # monotone in L
    assert legend["0"] == pytest.approx(m)
    for key in ("0.25", "0.5", "0.75"):
        value, _ = display_map(np.array([legend[key], m - 1.0, m + 1.0], np.float32), np.array([False, True, True]))
        assert value[0] == pytest.approx(float(key), abs=1e-5)
    # nats keep their meaning: the same excess over the median always gives the same display value
    shifted, legend2 = display_map(heat + 100.0, foreground)
    assert np.allclose(shifted, display, atol=1e-5) and legend2["0.5"] == pytest.approx(legend["0.5"] + 100.0)


# --- Volume-level pipeline ----------------------------------------------------------------------------------------

def oblique_2d(angle, spacing, origin) -> np.ndarray:
    from toporeg.transforms import rotation_matrix
    aff = np.eye(4)
    aff[:3, :3] = rotation_matrix((0.0, 0.0, angle)) @ np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def test_topology_heatmap_on_different_oblique_grids_lands_on_the_fixed_grid():
    """FIXED has a fluid-dark cavity; MOVING is the same anatomy without it, sampled on another oblique grid. The
    heatmap lives on FIXED's grid (shape and affine exactly) and is high where the cavity is on that grid."""
    from toporeg.geometry import resample_to
    shape = (24, 28)
    healthy = textured_phantom(shape, seed=1)
    cavity = disk(shape, (12, 14), 3.2).numpy()
    fixed_aff = oblique_2d(0.3, (1.2, 0.9), (-10.0, 5.0, 0.0))
    fixed = Volume(np.where(cavity, -0.5, healthy).astype(np.float32), fixed_aff)
    moving_grid = Volume(np.zeros((50, 50), np.float32), oblique_2d(-0.25, (1.0, 1.0), (-25.0, -12.0, 0.0)))
    moving = resample_to(Volume(healthy, fixed_aff), moving_grid)
    assert not np.allclose(moving.affine, fixed.affine) and moving.grid_shape != shape
    result = topology_heatmap(fixed, moving, TopologySettings(preset="fast", iterations=10), device="cpu")
    for vol in (result.heatmap, result.display):
        assert vol.grid_shape == shape
        assert np.array_equal(vol.affine, fixed.affine)
        assert np.all(np.isfinite(vol.data))
    heat = np.asarray(result.heatmap.data).reshape(shape)
    inner = np.zeros(shape, bool)
    inner[3:-3, 3:-3] = True
    assert auc(heat[inner], cavity[inner]) > 0.95
    assert cavity.ravel()[heat.argmax()]
    display = np.asarray(result.display.data)
    assert 0.0 <= display.min() and display.max() <= 1.0 and display.reshape(shape)[cavity].mean() > 0.25
    summary = result.summary()
    assert set(summary["display_legend"]) == {"0", "0.25", "0.5", "0.75", "1"} and result.timings["total_seconds"] > 0
    assert result.outlier is None and result.forward.mu.shape == (1, 2, *shape)


def test_topology_heatmap_bad_input():
    flat = Volume(textured_phantom((16, 20)), np.eye(4))
    cube = Volume(textured_phantom((12, 14, 10)), oblique_affine())
    with pytest.raises(InputError, match="2D"):
        topology_heatmap(flat, cube, TopologySettings(preset="fast"), device="cpu")
    with pytest.raises(InputError, match="method"):
        TopologySettings(method="magic")
    with pytest.raises(InputError, match="features"):
        TopologySettings(features="colour")
    with pytest.raises(InputError, match="model"):
        TopologySettings(method="learned")
    with pytest.raises(InputError):
        TopologySettings(iterations=-1)
