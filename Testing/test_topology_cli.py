"""`toporeg topology`, `toporeg models`, `toporeg register --topology-aware` and `toporeg train topology` as a user
runs them (issue #5): outputs on the fixed grid, report.json, controls, cancel, training and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import textured_phantom
from toporeg.cli.main import main
from toporeg.io import Volume, load_volume, save_volume
from toporeg.transforms import rotation_matrix

FAST = ["--fast", "--progress", "none", "--device", "cpu"]
TINY_TOPO = {"encoder": [8, 8, 8, 8], "decoder": [8, 8, 8, 8], "final_convs": [8]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def oblique(angles, spacing, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation_matrix(angles) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def disk(shape, centre, radius) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius**2


def cavity_pair(tmp_path: Path, shape, fixed_aff, moving_grid: Volume, seed=1) -> tuple[Path, Path, np.ndarray]:
    """FIXED = phantom with a dark cavity; MOVING = the same anatomy without it, on another (oblique) grid."""
    from toporeg.geometry import resample_to
    healthy = textured_phantom(shape, seed=seed)
    cavity = disk(shape, [n // 2 for n in shape], 3.2)
    tag = f"{len(shape)}d"
    fixed = save_volume(Volume(np.where(cavity, -0.5, healthy).astype(np.float32), fixed_aff),
                        tmp_path / f"fixed{tag}.nii.gz")
    moving = save_volume(resample_to(Volume(healthy, fixed_aff), moving_grid), tmp_path / f"moving{tag}.nii.gz")
    return fixed, moving, cavity


@pytest.fixture
def pair3d(tmp_path):
    shape = (18, 20, 16)
    fixed_aff = oblique((0.2, -0.1, 0.3), (1.2, 1.0, 1.4), (-10.0, 5.0, 3.0))
    grid = Volume(np.zeros((28, 30, 28), np.float32), oblique((-0.15, 0.1, -0.2), (1.0, 1.0, 1.0),
                                                            (-18.0, -6.0, -8.0)))
    return cavity_pair(tmp_path, shape, fixed_aff, grid)


@pytest.fixture
def pair2d(tmp_path):
    shape = (20, 22)
    fixed_aff = oblique((0.0, 0.0, 0.3), (1.2, 0.9, 1.0), (-10.0, 5.0, 0.0))
    # a small rotation: a 20×22 textured patch is too small for the affine stage to undo a large one
    grid = Volume(np.zeros((44, 44), np.float32), oblique((0.0, 0.0, 0.22), (1.0, 1.0, 1.0), (-25.0, -12.0, 0.0)))
    return cavity_pair(tmp_path, shape, fixed_aff, grid)


def test_topology_writes_every_output_on_the_fixed_grid(pair3d, tmp_path):
    fixed, moving, cavity = pair3d
    out = tmp_path / "topo"
    assert main(["topology", str(fixed), str(moving), "--out", str(out), "--iterations", "10", *FAST]) == 0
    for name in ("heatmap.nii.gz", "heatmap_display.nii.gz", "registration/displacement.nii.gz", "report.json"):
        assert (out / name).exists(), name
    import nibabel as nib
    ref = nib.load(str(fixed))
    for name in ("heatmap.nii.gz", "heatmap_display.nii.gz"):
        img = nib.load(str(out / name))
        assert img.shape == ref.shape and np.array_equal(img.affine, ref.affine)
        assert img.get_data_dtype() == np.float32 and np.all(np.isfinite(img.get_fdata()))
    display = nib.load(str(out / "heatmap_display.nii.gz")).get_fdata()
    assert display.min() >= 0.0 and display.max() <= 1.0
    heat = nib.load(str(out / "heatmap.nii.gz")).get_fdata()
    assert np.median(heat[cavity]) > np.percentile(heat[~cavity], 95)  # the cavity, found on the fixed grid
    disp = load_volume(out / "registration" / "displacement.nii.gz")
    assert disp.grid_shape == load_volume(fixed).grid_shape
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["timings"]["total_seconds"] > 0
    legend = report["metrics"]["display_legend"]
    assert set(legend) == {"0", "0.25", "0.5", "0.75", "1"} and legend["0"] < legend["0.5"] < legend["1"]
    assert report["method"] == "optimize" and report["features"] == "intensity"
    assert not (out / "outlier.nii.gz").exists()


def test_topology_with_controls_writes_the_outlier_map(pair2d, tmp_path):
    from toporeg.geometry import resample_to
    fixed, moving, cavity = pair2d
    ref = load_volume(fixed)
    controls = []
    for k, angle in enumerate((0.05, -0.08)):  # the healthy anatomy on slightly rotated grids
        grid = Volume(np.zeros((28, 28), np.float32), oblique((0.0, 0.0, 0.3 + angle), (1.1, 1.0, 1.0),
                                                              (-12.0, 4.0, 0.0)))
        healthy = Volume(textured_phantom(ref.grid_shape, seed=1), ref.affine)
        controls.append(save_volume(resample_to(healthy, grid), tmp_path / f"control{k}.nii.gz"))
    out = tmp_path / "topo"
    assert main(["topology", str(fixed), str(moving), "--out", str(out), "--iterations", "5",
                 "--controls", *map(str, controls), *FAST]) == 0
    q = load_volume(out / "outlier.nii.gz")
    assert q.grid_shape == ref.grid_shape and np.allclose(q.affine, ref.affine, atol=1e-6)
    values = np.asarray(q.data).reshape(ref.grid_shape)
    assert np.all(np.isfinite(values))
    assert np.median(values[cavity]) > np.percentile(values[~cavity], 95)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["controls"]) == 2 and "outlier_nats" in report["metrics"]
    assert report["files"]["outlier"] == "outlier.nii.gz"


def test_topology_cancel_file_leaves_no_outputs(pair2d, tmp_path):
    fixed, moving, _ = pair2d
    cancel = tmp_path / "cancel"
    cancel.write_text("", encoding="utf-8")
    out = tmp_path / "topo"
    assert main(["topology", str(fixed), str(moving), "--out", str(out), "--cancel-file", str(cancel), *FAST]) == 130
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".topo")]


def test_topology_refuses_a_2d_3d_pair(pair2d, pair3d, tmp_path, capsys):
    fixed2d, _, _ = pair2d
    fixed3d, _, _ = pair3d
    assert main(["topology", str(fixed3d), str(fixed2d), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toporeg: error:") and "2D" in err and not (tmp_path / "o").exists()


def test_models_json_lists_models(capsys):
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert isinstance(models, list)
    for m in models:
        assert {"name", "source", "path"} <= set(m)


def test_register_topology_aware_writes_weights(pair2d, tmp_path):
    fixed, moving, cavity = pair2d
    out = tmp_path / "reg"
    assert main(["register", str(fixed), str(moving), "--out", str(out), "--topology-aware", *FAST]) == 0
    w = load_volume(out / "topology_weights.nii.gz")
    ref = load_volume(fixed)
    assert w.grid_shape == ref.grid_shape and np.allclose(w.affine, ref.affine, atol=1e-6)
    values = np.asarray(w.data).reshape(ref.grid_shape)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values[cavity].mean() < np.median(values[~cavity]) - 0.3  # the cavity is down-weighted
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["files"]["topology_weights"] == "topology_weights.nii.gz" and "display_legend" in report["topology"]
    assert (out / "warped.nii.gz").exists() and (out / "heatmap.nii.gz").exists()


# --- training -------------------------------------------------------------------------------------------------

def tiny_cache(path: Path, shape=(32, 32, 8)) -> Path:
    """A template cache in the `dataset_cache` format with two small phantom 'brains' (no real data needed)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    arrays: dict[str, np.ndarray] = {}
    for k, name in enumerate(("mni152", "colin27")):
        r = np.sqrt(grids[0] ** 2 + grids[1] ** 2 + (0.5 * grids[2]) ** 2) / (0.85 - 0.05 * k)
        r_plane = np.sqrt(grids[0] ** 2 + grids[1] ** 2) / 0.85
        brain = r < 1
        tissue = (np.where(r_plane < 0.2, 1, np.where(r < 0.65, 3, 2)) * brain).astype(np.uint8)
        texture = 0.03 * np.random.default_rng(k).standard_normal(shape)
        arrays[f"{name}_image"] = (np.array([0.0, 0.25, 0.6, 0.9])[tissue] + texture * brain).clip(0, 1).astype(
            np.float32)
        arrays[f"{name}_tissue"] = tissue
        arrays[f"{name}_mask"] = brain.astype(np.uint8)
    arrays["grid_affine"] = np.diag([2.0, 2.0, 2.0, 1.0])
    meta = {"format": "toporeg-template-cache/1", "grid": {"shape": list(shape), "spacing_mm": 2.0}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def train_config(tmp_path: Path, **kw) -> Path:
    cfg = {"name": "tiny_topo", "ndim": 2, "model": TINY_TOPO, "steps": 4, "batch_size": 2, "lr": 1e-3,
           "warmup_steps": 0, "val_every": 0, "val_pairs": 1, "val_lesions": 0, "log_every": 1,
           "checkpoint_every": 0, "device": "cpu", "cache": str(tiny_cache(tmp_path / "cache.npz")), "plot": False,
           **kw}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def test_train_topology_writes_weights_and_card(tmp_path):
    from toporeg.models.weights import load_model, sha256_file
    from toporeg.topology.cvae import TopologyCVAE
    cfg = train_config(tmp_path, val_every=2, val_lesions=1)
    out = tmp_path / "run"
    assert main(["train", "topology", "--config", str(cfg), "--out", str(out)]) == 0
    card = json.loads((out / "tiny_topo.json").read_text(encoding="utf-8"))
    assert card["sha256"] == sha256_file(out / "tiny_topo.safetensors")
    assert card["task"] == "topology" and card["training"]["iterations"] == 4
    assert math.isfinite(card["prior"]["alpha"]) and math.isfinite(card["prior"]["beta"])
    assert 0.0 <= card["validation"]["lesion_auc"] <= 1.0 and math.isfinite(card["validation"]["neg_elbo"])
    model, _ = load_model(out / "tiny_topo.safetensors")
    assert isinstance(model, TopologyCVAE) and math.isfinite(float(model.alpha))
    fixed = torch.rand(1, 1, 20, 18)
    fit = model.fit_pair(fixed, fixed.clone())
    assert torch.all(torch.isfinite(fit.score))
    rows = (out / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("step,") and len(rows) == 5
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["steps"] == 4 and report["timings"]["total_seconds"] > 0


def test_train_topology_resume_continues_from_the_checkpoint(tmp_path):
    from toporeg.models.weights import load_model
    # constant learning rate: `--steps 2` would otherwise also shorten the cosine schedule of the partial run
    cfg = train_config(tmp_path, lr_schedule="constant", schedule_by_time=False, val_pairs=1)
    assert main(["train", "topology", "--config", str(cfg), "--out", str(tmp_path / "full")]) == 0
    assert main(["train", "topology", "--config", str(cfg), "--out", str(tmp_path / "part"), "--steps", "2"]) == 0
    assert main(["train", "topology", "--config", str(cfg), "--out", str(tmp_path / "part"), "--resume"]) == 0
    a, _ = load_model(tmp_path / "full" / "tiny_topo.safetensors")
    b, card = load_model(tmp_path / "part" / "tiny_topo.safetensors")
    assert card["training"]["iterations"] == 4
    rows = (tmp_path / "part" / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_topology_report_messages_warn_about_the_input_domain(tmp_path):
    """A whole head (3.7 L of foreground) against a skull-stripped brain (1.8 L): report.json's `messages` say so (the
    Slicer panel shows them); brain masks silence it; a learned model's card adds its own domain checks."""
    from toporeg.models.model_grid import model_grid
    from toporeg.topology.pipeline import TopologySettings, domain_messages

    shape, spacing = (20, 20, 20), 10.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -100.0
    texture = textured_phantom(shape, seed=3)
    head_fg, brain_fg = disk(shape, (10, 10, 10), 9.6), disk(shape, (10, 10, 10), 7.5)
    head = Volume(np.where(head_fg, 1.0 + 0.3 * texture, 0.0).astype(np.float32), affine)
    brain = Volume(np.where(brain_fg, 1.0 + 0.3 * texture, 0.0).astype(np.float32), affine)
    fixed, moving = save_volume(head, tmp_path / "head.nii.gz"), save_volume(brain, tmp_path / "brain.nii.gz")
    out = tmp_path / "topo"
    assert main(["topology", str(fixed), str(moving), "--out", str(out), "--iterations", "2", *FAST]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (message,) = report["messages"]
    assert message.startswith("the fixed image looks like a whole head (") and "a skull-stripped brain (" in message
    assert "skull and scalp will show as topological change" in message

    settings, same = TopologySettings(), domain_messages(brain, brain, TopologySettings(), {}, brain)
    assert same == []
    mask = Volume(brain_fg.astype(np.uint8), affine, is_label=True)
    assert domain_messages(head, brain, settings, {}, head, fixed_mask=mask) == []
    card = {"input_domain": {"skull": "stripped", "shape": [12, 12, 12], "spacing_mm": [10.0, 10.0, 10.0]}}
    learned = TopologySettings(method="learned", model="card-only")
    messages = domain_messages(brain, head, learned, card, model_grid(brain, card))
    assert any(m.startswith("moving image: the model was trained on skull-stripped brains") for m in messages)
    assert any("field of view" in m for m in domain_messages(head, head, learned, card, model_grid(head, card)))
