"""Control-set statistics for the outlier score Q, computed once per cohort (issue #10): files that round-trip and
refuse tampering, Q from stored baselines that is high at an inserted change and lands on the scored image's own
grid, one baseline fit for many images, the `toporeg controls` → `toporeg topology --control-stats` round trip,
and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import smooth_velocity, textured_phantom
from toporeg.cli.main import main
from toporeg.errors import InputError
from toporeg.geometry import resample_to
from toporeg.io import Volume, load_volume, save_volume
from toporeg.topology import control_stats as cs
from toporeg.topology import score
from toporeg.topology.control_stats import ControlStatistics, compute_control_statistics, outlier_from_statistics
from toporeg.topology.pipeline import TopologySettings, topology_heatmap
from toporeg.transforms import rotation_matrix
from toporeg.transforms.sampling import warp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (24, 28)
SETTINGS = TopologySettings(preset="fast", iterations=10)  # a small fit budget: the whole file runs in ~20 s
FAST = ["--fast", "--iterations", "10", "--progress", "none", "--device", "cpu"]


def affine_2d(angle: float, spacing: tuple[float, float], origin: tuple[float, float]) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation_matrix((0.0, 0.0, angle)) @ np.diag([*spacing, 1.0])
    aff[:3, 3] = [*origin, 0.0]
    return aff


def translation(shift: tuple[float, float]) -> np.ndarray:
    out = np.eye(4)
    out[:2, 3] = shift
    return out


BASE = affine_2d(0.0, (1.0, 1.0), (-12.0, -14.0))
# FIXED's grid differs from the reference's in spacing, origin, orientation and shape
FIXED_GRID = Volume(np.zeros((32, 33), np.float32), affine_2d(0.1, (0.8, 0.9), (-14.0, -13.5)))


def draw(seed: int, cavity: bool = False) -> tuple[Volume, Volume]:
    """The shared anatomy under a smooth random deformation plus noise, on BASE; with `cavity`, a dark disk that
    no control has (a new structure: no smooth deformation of a control produces it). Returns image and disk."""
    anatomy = torch.as_tensor(textured_phantom(SHAPE, seed=1))[None, None]
    grids = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    disk = torch.as_tensor((grids[0] - 12) ** 2 + (grids[1] - 15) ** 2 < 3.2**2)
    if cavity:
        anatomy = anatomy.clone()
        anatomy[0, 0][disk] = -0.5
    u = smooth_velocity(SHAPE, magnitude=1.0, seed=seed, sigma=4.0)
    noise = 0.02 * torch.randn(anatomy.shape, generator=torch.Generator().manual_seed(100 + seed))
    image = warp(anatomy, u, padding="border") + noise
    return Volume(image[0, 0].numpy(), BASE), Volume(warp(disk[None, None].float(), u)[0, 0].numpy(), BASE)


@pytest.fixture(scope="module")
def cohort(one_torch_thread):
    """Two controls on their own grids, statistics computed once, and Q of two images scored against them: a
    cavity image on FIXED_GRID, its anatomy moved by 2.5 mm (so a map left in reference space would miss the
    cavity), and a healthy image. Counts the baseline fits while doing so."""
    controls = []
    for k, (angle, origin) in enumerate([(0.0, (-12.0, -14.0)), (0.04, (-13.0, -13.0))]):
        image, _ = draw(k + 1)
        grid = Volume(np.zeros(SHAPE, np.float32), affine_2d(angle, (1.0, 1.0), origin))
        controls.append(resample_to(image, grid, transform=translation((0.5 * k, -0.5 * k))))
    image, disk = draw(4, cavity=True)
    shift = translation((-2.5, 2.0))  # FIXED point → BASE point: the anatomy sits 2.5 mm further along i
    fixed = resample_to(image, FIXED_GRID, transform=shift)
    cavity = np.asarray(resample_to(disk, FIXED_GRID, transform=shift).data).reshape(FIXED_GRID.grid_shape) > 0.5
    healthy, _ = draw(5)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    original = score.control_set_baselines
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cs, "control_set_baselines", counted)
        mp.setattr(score, "control_set_baselines", counted)  # what outlier_score would call without baselines
        stats = compute_control_statistics(controls, SETTINGS, device="cpu")
        q_fixed = outlier_from_statistics(fixed, stats, device="cpu")
        q_healthy = outlier_from_statistics(healthy, stats, device="cpu")
    return {"controls": controls, "stats": stats, "fixed": fixed, "cavity": cavity, "healthy": healthy,
            "q_fixed": q_fixed, "q_healthy": q_healthy, "baseline_fits": len(calls)}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size))


def test_baselines_are_fitted_once_for_several_images(cohort):
    assert cohort["baseline_fits"] == 1
    stats = cohort["stats"]
    assert stats.n_controls == 2 and len(stats.baselines) == 2 and stats.baselines.shared is not None
    assert stats.grid.same_grid(cohort["controls"][0])  # optimize: the work grid is the reference grid


def test_q_is_high_at_the_inserted_change_and_low_elsewhere(cohort):
    q, cavity = np.asarray(cohort["q_fixed"].data).reshape(FIXED_GRID.grid_shape), cohort["cavity"]
    assert cavity.sum() > 30 and np.all(np.isfinite(q))
    inside, outside = q[cavity], q[~cavity]
    assert np.median(inside) > 10.0 * max(outside.mean(), 1.0)
    assert np.median(inside) > np.percentile(outside, 95)
    healthy = np.asarray(cohort["q_healthy"].data)
    assert abs(float(np.median(healthy))) < 0.02 * np.median(inside)  # a healthy image: Q ≈ 0 everywhere
    assert np.percentile(healthy, 99) < np.percentile(inside, 10)


def test_q_lands_on_the_scored_images_own_grid_where_the_change_is(cohort):
    q, cavity, fixed = cohort["q_fixed"], cohort["cavity"], cohort["fixed"]
    reference = cohort["stats"].reference
    assert fixed.grid_shape != reference.grid_shape and not np.allclose(fixed.spacing, reference.spacing)
    assert q.grid_shape == fixed.grid_shape and np.array_equal(q.affine, fixed.affine)
    values = np.asarray(q.data).reshape(fixed.grid_shape)
    assert cavity.ravel()[values.argmax()]
    assert auc(values, cavity) > 0.95  # ≈ 0.8 if Q were mapped back without the inverse registration
    healthy = cohort["q_healthy"]  # an image on the reference's own grid gets Q on that grid
    assert healthy.grid_shape == SHAPE and np.array_equal(healthy.affine, cohort["healthy"].affine)


def test_mean_control_heatmap_is_on_the_reference_grid(cohort):
    stats = cohort["stats"]
    mean = stats.mean_heatmap()
    assert mean.grid_shape == stats.reference.grid_shape and np.array_equal(mean.affine, stats.reference.affine)
    expected = torch.stack(list(stats.baselines.maps)).mean(0).numpy()
    assert np.allclose(np.asarray(mean.data), expected, atol=1e-5)


def test_save_load_round_trip_gives_identical_q(cohort, tmp_path):
    stats = cohort["stats"]
    files = stats.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files.values())
    meta = json.loads((tmp_path / files["metadata"]).read_text(encoding="utf-8"))
    assert meta["n_controls"] == 2 and len(meta["sha256"]) == 64 and meta["settings"]["iterations"] == 10
    loaded = ControlStatistics.load(tmp_path)
    assert loaded.settings == stats.settings and loaded.control_names == stats.control_names
    assert torch.equal(loaded.controls, stats.controls)
    assert all(torch.equal(a, b) for a, b in zip(loaded.baselines.maps, stats.baselines.maps))
    assert torch.equal(loaded.baselines.shared[0], stats.baselines.shared[0])
    assert loaded.baselines.shared[1] == stats.baselines.shared[1]
    assert np.array_equal(loaded.reference.affine, stats.reference.affine) and loaded.grid.same_grid(stats.grid, 0)
    q = outlier_from_statistics(cohort["healthy"], loaded, device="cpu")
    assert np.array_equal(np.asarray(q.data), np.asarray(cohort["q_healthy"].data))


def test_tampered_or_missing_statistics_are_refused(cohort, tmp_path):
    cohort["stats"].save(tmp_path)
    tensors = tmp_path / cs.TENSORS_FILE
    raw = bytearray(tensors.read_bytes())
    raw[-3] ^= 0x01  # one bit of one baseline value
    tensors.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum"):
        ControlStatistics.load(tmp_path)
    with pytest.raises(InputError, match="no control statistics"):
        ControlStatistics.load(tmp_path / "elsewhere")


def test_learned_statistics_live_on_the_models_grid(cohort, tmp_path):
    """--method learned: the work grid is the trained model's grid (as in the pipeline); the model's shared
    parameters need no Σ_f/α/β in the file; Q still comes back on the scored image's grid."""
    from toporeg.models.catalogue import resolve_model
    settings = TopologySettings(method="learned", model=str(resolve_model("topology_2d_intensity")), preset="fast")
    stats = compute_control_statistics(cohort["controls"], settings, device="cpu")
    assert stats.grid.grid_shape != SHAPE and stats.baselines.shared is None
    assert stats.mean_heatmap().grid_shape == SHAPE
    stats.save(tmp_path)
    loaded = ControlStatistics.load(tmp_path)
    assert loaded.grid.same_grid(stats.grid, 0) and loaded.check_settings(settings) == []
    image, disk = draw(4, cavity=True)
    q = outlier_from_statistics(image, loaded, device="cpu")
    assert q.grid_shape == SHAPE and np.array_equal(q.affine, image.affine)
    values, inside = np.asarray(q.data), np.asarray(disk.data) > 0.5
    assert np.all(np.isfinite(values)) and np.median(values[inside]) > np.median(values[~inside])


def test_clear_errors(cohort):
    stats, controls, fixed = cohort["stats"], cohort["controls"], cohort["fixed"]
    with pytest.raises(InputError, match="at least two control images"):
        compute_control_statistics(controls[:1], SETTINGS, device="cpu")
    with pytest.raises(InputError, match="features 'intensity'"):  # refused before any registration
        topology_heatmap(fixed, controls[0], TopologySettings(features="semantic", preset="fast"),
                         control_stats=stats, device="cpu")
    with pytest.raises(InputError, match="not both"):
        topology_heatmap(fixed, controls[0], SETTINGS, controls=controls, control_stats=stats, device="cpu")
    notes = stats.check_settings(TopologySettings(preset="fast", iterations=60))  # the stored fit budget is used
    assert len(notes) == 1 and "iterations 10" in notes[0]


def test_cli_controls_then_topology_with_control_stats(cohort, tmp_path, capsys):
    paths = [save_volume(c, tmp_path / f"control{k}.nii.gz") for k, c in enumerate(cohort["controls"])]
    fixed = save_volume(cohort["fixed"], tmp_path / "fixed.nii.gz")
    moving = save_volume(cohort["healthy"], tmp_path / "moving.nii.gz")
    stats_dir = tmp_path / "stats"
    assert main(["controls", *map(str, paths), "--out", str(stats_dir), *FAST]) == 0
    for name in ("control_stats.safetensors", "control_stats.json", "mean_control_heatmap.nii.gz", "report.json"):
        assert (stats_dir / name).exists(), name
    mean = load_volume(stats_dir / "mean_control_heatmap.nii.gz")
    assert mean.grid_shape == SHAPE and np.allclose(mean.affine, load_volume(paths[0]).affine, atol=1e-6)
    report = json.loads((stats_dir / "report.json").read_text(encoding="utf-8"))
    assert report["command"] == "controls" and report["pair_fits"] == 4 and report["metrics"]["n_controls"] == 2
    assert report["timings"]["total_seconds"] > 0

    out = tmp_path / "topo"
    assert main(["topology", str(fixed), str(moving), "--out", str(out), "--control-stats", str(stats_dir),
                 *FAST]) == 0
    q = load_volume(out / "outlier.nii.gz")
    ref = load_volume(fixed)
    assert q.grid_shape == ref.grid_shape and np.allclose(q.affine, ref.affine, atol=1e-6)
    values, cavity = np.asarray(q.data).reshape(ref.grid_shape), cohort["cavity"]
    assert np.median(values[cavity]) > np.percentile(values[~cavity], 95)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["files"]["outlier"] == "outlier.nii.gz" and report["control_stats"]["n_controls"] == 2

    cancel = tmp_path / "cancel"
    cancel.write_text("", encoding="utf-8")
    assert main(["controls", *map(str, paths), "--out", str(tmp_path / "cancelled"), "--cancel-file", str(cancel),
                 *FAST]) == 130
    assert not (tmp_path / "cancelled").exists() or not any((tmp_path / "cancelled").iterdir())
    capsys.readouterr()
    assert main(["controls", str(paths[0]), "--out", str(tmp_path / "one"), *FAST]) == 2
    assert "at least two control images" in capsys.readouterr().err
    assert not (tmp_path / "one").exists() or not any((tmp_path / "one").iterdir())
    both = ["topology", str(fixed), str(moving), "--out", str(tmp_path / "both"), *FAST]
    assert main([*both, "--controls", *map(str, paths), "--control-stats", str(stats_dir)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*both, "--features", "semantic", "--control-stats", str(stats_dir)]) == 2
    assert "other topology settings" in capsys.readouterr().err
