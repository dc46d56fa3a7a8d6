"""Training data and entry points: synthetic pairs, template cache/augmentation, trainers, resume, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toporeg.models import load_model
from toporeg.training import common
from toporeg.training.synth import SynthMorphPairs
from toporeg.training.templates import TemplateAugmenter

ROOT = Path(__file__).resolve().parents[1]
TINY_VXM = {"encoder": [4, 8, 8, 8], "decoder": [8, 8, 8], "final_convs": [8]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    from toporeg.training.dataset_cache import build_cache
    return build_cache(tmp_path_factory.mktemp("cache") / "templates.npz")


def test_synthetic_pairs_are_deterministic_under_a_seed():
    for shape in ((24, 32), (16, 16, 16)):
        a = SynthMorphPairs(shape, seed=5).sample(2)
        b = SynthMorphPairs(shape, seed=5).sample(2)
        c = SynthMorphPairs(shape, seed=6).sample(2)
        for key in ("moving", "fixed", "moving_labels", "fixed_labels"):
            assert torch.equal(a[key], b[key])
        assert not torch.equal(a["moving"], c["moving"])
        assert a["moving"].shape == (2, 1, *shape) and a["fixed_labels"].dtype == torch.int64
        assert float(a["moving"].min()) >= 0.0 and float(a["moving"].max()) <= 1.0
        # the pair shares its labels (one base map, two deformations), not identical geometry
        assert set(torch.unique(a["moving_labels"]).tolist()) & set(torch.unique(a["fixed_labels"]).tolist())
        assert not torch.equal(a["moving_labels"], a["fixed_labels"])


def test_template_cache_and_augmenter(cache):
    data = common_load(cache)
    assert data["mni152_image"].shape == (96, 112, 96) and data["colin27_tissue"].max() == 3
    assert data["meta"]["grid"]["spacing_mm"] == 2.0 and cache.stat().st_size < 40e6
    aug = TemplateAugmenter(data, ndim=2, seed=3)
    p1, p2 = aug.pairs(2), TemplateAugmenter(data, ndim=2, seed=3).pairs(2)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert p1["moving"].shape == (2, 1, 96, 112) and set(torch.unique(p1["fixed_labels"]).tolist()) <= {0, 1, 2, 3}
    img = TemplateAugmenter(data, ndim=3, seed=0, config={"elastic_std": [0.0, 0.0]}).images(1)
    assert img["image"].shape == (1, 1, 96, 112, 96)
    assert 0.0 <= float(img["image"].min()) <= float(img["image"].max()) <= 1.0


def common_load(path):
    from toporeg.training.dataset_cache import load_cache
    return load_cache(path)


def test_training_modules_do_not_import_simpleitk_or_nibabel():
    code = ("import sys, toporeg.training.train_registration, toporeg.training.train_deepsim, toporeg.models; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('SimpleITK', 'nibabel')]; print(bad); "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _config(tmp_path, cache, **kw) -> Path:
    cfg = {"name": "tiny", "ndim": 2, "model": TINY_VXM, "steps": 3, "batch_size": 1, "lr": 1e-3,
           "val_every": 2, "val_pairs": 1, "log_every": 1, "checkpoint_every": 2, "device": "cpu",
           "cache": str(cache), "data": {"synthetic": 0.5, "templates": 0.5}, **kw}
    path = tmp_path / f"{cfg['name']}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def test_train_registration_end_to_end(tmp_path, cache):
    from toporeg.training.train_registration import main
    out = tmp_path / "run"
    assert main(["--config", str(_config(tmp_path, cache)), "--out", str(out)]) == 0
    for name in ("tiny.safetensors", "tiny.json", "train_log.csv", "val_log.csv", "checkpoint.safetensors",
                 "report.json"):
        assert (out / name).exists(), name
    model, card = load_model(out / "tiny.safetensors")
    assert card["training"]["iterations"] == 3 and 0.0 <= card["validation"]["dice"] <= 1.0
    assert "synthetic_folding_percent" in card["validation"] and card["converged"].startswith("not converged")
    assert card["input_domain"]["spacing_mm"] == [2.0, 2.0] and card["input_domain"]["skull"] == "stripped"
    rows = (out / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["timings"]["total_seconds"] > 0


def test_resume_reproduces_an_uninterrupted_run(tmp_path, cache):
    from toporeg.training.train_registration import main
    cfg = _config(tmp_path, cache, data={"synthetic": 1.0}, shape=[32, 32], steps=4, val_every=0,
                  checkpoint_every=0, plot=False)
    assert main(["--config", str(cfg), "--out", str(tmp_path / "full")]) == 0
    assert main(["--config", str(cfg), "--out", str(tmp_path / "part"), "--steps", "2"]) == 0
    assert main(["--config", str(cfg), "--out", str(tmp_path / "part"), "--resume"]) == 0
    a, _ = load_model(tmp_path / "full" / "tiny.safetensors")
    b, card = load_model(tmp_path / "part" / "tiny.safetensors")
    assert card["training"]["iterations"] == 4
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_time_budget_stops_gracefully(tmp_path, cache):
    from toporeg.training.train_registration import main
    cfg = _config(tmp_path, cache, data={"synthetic": 1.0}, shape=[32, 32], steps=100000, val_every=0, plot=False)
    assert main(["--config", str(cfg), "--out", str(tmp_path / "b"), "--time-budget", "4"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["stopped_by"] == "time budget" and 0 < report["steps"] < 100000
    assert (tmp_path / "b" / "tiny.safetensors").exists()


def test_train_deepsim_end_to_end(tmp_path, cache):
    from toporeg.training.train_deepsim import main
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"ndim": 2, "channels": [4, 8, 8], "steps": 2, "val_every": 1, "val_images": 1,
                               "log_every": 1, "device": "cpu", "cache": str(cache), "plot": False}), encoding="utf-8")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "ds"), "--name", "ds"]) == 0
    model, card = load_model(tmp_path / "ds" / "ds.safetensors")
    assert card["architecture"] == "DeepSimExtractor" and card["labels"]["2"] == "GM"
    assert [f.shape[1] for f in model.features(torch.rand(1, 1, 32, 32))] == [4, 8, 8]


def test_convergence_statement():
    steps = list(range(0, 1000, 10))
    falling = common.convergence(steps, [10.0 - 0.009 * s for s in steps])
    flat = common.convergence(steps, [1.0 + 0.001 * np.sin(s) for s in steps])
    assert not falling["converged"] and falling["statement"].startswith("not converged")
    assert flat["converged"] and flat["statement"].startswith("plateaued")
    assert not common.convergence([1, 2], [1.0, 0.5])["converged"]


def test_shipped_configs_parse():
    from toporeg.training.train_deepsim import DeepSimTrainConfig
    from toporeg.training.train_registration import RegistrationTrainConfig
    folder = ROOT / "TopoRegLib" / "src" / "toporeg" / "training" / "configs"
    assert common.load_config(RegistrationTrainConfig, folder / "vxm_diff_3d_2mm.json").ndim == 3
    assert common.load_config(RegistrationTrainConfig, folder / "vxm_diff_2d.json").ndim == 2
    assert common.load_config(DeepSimTrainConfig, folder / "deepsim_seg_3d.json").kind == "seg"
    with pytest.raises(ValueError, match="unknown config keys"):
        common.load_config(RegistrationTrainConfig, None, {"stepz": 3})
