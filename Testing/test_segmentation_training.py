"""Segmentation training and benchmark (issue #6): smoke runs write weights + cards that load back, runs are
reproducible and resumable, the shipped configs parse, and `bench uncertainty --fast` writes its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segmentation_fixtures import build_caches

from toporeg.models.weights import load_model, save_model
from toporeg.segmentation.models import METHODS, DeepEnsemble, build_segmentation_model
from toporeg.training import common
from toporeg.training.train_segmentation import CONFIG_DIR, SegTrainConfig, main

TINY = {"channels": [2, 4, 4, 8]}


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict:
    return build_caches(tmp_path_factory.mktemp("segtrain"))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _config(tmp_path: Path, caches: dict, **kw) -> Path:
    cfg = {"model": TINY, "steps": 3, "batch_size": 2, "val_every": 2, "val_images": 2, "val_samples": 2,
           "log_every": 1, "checkpoint_every": 2, "device": "cpu", "schedule_by_time": False, "warmup_steps": 0,
           "plot": False, "cache": str(caches["template"]), "seg_cache": str(caches["seg"]), **kw}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("method,task", [("unet", "tissue"), ("mcdropout", "brain"), ("probunet", "ambiguous"),
                                         ("ensemble", "ambiguous")])
def test_smoke_run_writes_weights_and_card_that_load_back(tmp_path, caches, method, task):
    out = tmp_path / "run"
    assert main(["--config", str(_config(tmp_path, caches)), "--model", method, "--task", task,
                 "--out", str(out)]) == 0
    name = f"seg_{task}_{method}"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["checkpoint.safetensors", f"{name}.safetensors"]
    model, card = load_model(out / f"{name}.safetensors")
    assert model.method == method and card["method"] == method and card["task"] == task and card["ndim"] == 2
    assert card["labels"]["0"] == "background" and len(card["labels"]) == model.n_classes
    assert card["input_domain"]["skull"] == "both" and card["input_domain"]["spacing_mm"] == [2.0, 2.0]
    assert card["training"]["templates"] == ["mni152"] and card["training"]["hold_out"] == "colin27"
    assert all(d["licence"] for d in card["training"]["data"]) and card["limitations"]
    assert {"dice", "auroc", "ece"} <= set(card["validation"]) and card["converged"].startswith("not converged")
    assert len(card["sha256"]) == 64 and card["training"]["iterations"] == 3
    if task == "ambiguous":
        assert "ged" in card["validation"] and card["labels"]["1"] == "white matter"
        assert not any("FSL" in d["licence"] for d in card["training"]["data"])  # shipped: permissive data only
        assert any("MNI/McGill" in d["licence"] for d in card["training"]["data"])
    assert "soft Dice" in card["training"]["loss"] and card["backbone"]["dice_weight"] == 1.0
    assert "PER AXIAL SLICE" in card["input_domain"]["intensity"]
    if method == "ensemble":
        assert isinstance(model, DeepEnsemble) and len(model.members) == 4
        assert len(set(card["training"]["member_seeds"])) == 4
    probs = model.sample_probabilities(torch.rand(1, 1, 96, 112), 3, torch.Generator().manual_seed(0))
    assert probs.shape == (3, 1, model.n_classes, 96, 112)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "seg_tissue_unet.safetensors"))  # tensors: the file's header order may vary


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_reproducible_and_resumes_exactly(tmp_path, caches):
    cfg = _config(tmp_path, caches, steps=4, val_every=0, checkpoint_every=2, lr_schedule="constant")
    for name in ("a", "b"):
        assert main(["--config", str(cfg), "--out", str(tmp_path / name), "--task", "tissue"]) == 0
    reference = _weights(tmp_path / "a")
    assert _same(reference, _weights(tmp_path / "b"))
    main(["--config", str(cfg), "--out", str(tmp_path / "c"), "--task", "tissue", "--steps", "2"])
    main(["--config", str(cfg), "--out", str(tmp_path / "c"), "--task", "tissue", "--resume"])
    assert _same(reference, _weights(tmp_path / "c"))
    main(["--config", str(cfg), "--out", str(tmp_path / "d"), "--task", "tissue", "--seed", "1"])
    assert not _same(reference, _weights(tmp_path / "d"))


def test_shipped_configs_parse():
    for method in METHODS:
        for ndim in (2, 3):
            cfg = common.load_config(SegTrainConfig, CONFIG_DIR / f"seg_{method}_{ndim}d.json")
            assert cfg.method == method and cfg.ndim == ndim and cfg.hold_out == "colin27"
            assert cfg.name == f"seg_tissue_{method}" + ("_3d" if ndim == 3 else "")
            assert cfg.model["dice_weight"] == 1.0
            if ndim == 2:
                assert cfg.time_budget_s <= 600 and cfg.device == "cpu"


def _tiny_models(folder: Path, card_extra: dict) -> None:
    for task, n_classes, names in (("ambiguous", 2, ["background", "white matter"]),):
        for method in METHODS:
            torch.manual_seed(0)
            model = build_segmentation_model(method, ndim=2, n_classes=n_classes, **TINY)
            card = {"task": task, "method": method, "labels": {str(i): n for i, n in enumerate(names)},
                    "training": {"templates": ["mni152"], "iterations": 0}, **card_extra}
            save_model(model, folder / f"seg_{task}_{method}.safetensors", card)


def test_bench_fast_on_tiny_untrained_models(tmp_path, caches):
    from toporeg.cli.main import main as cli
    models = tmp_path / "models"
    _tiny_models(models, {"input_domain": {"spacing_mm": [2.0, 2.0]}, "converged": "untrained"})
    out = tmp_path / "bench"
    assert cli(["bench", "uncertainty", "--fast", "--samples", "2", "--models", str(models), "--tasks",
                "ambiguous,brain", "--out", str(out), "--cache", str(caches["template"]),
                "--seg-cache", str(caches["seg"])]) == 0  # no brain models: that task reports them missing
    md = (out / "uncertainty.md").read_text(encoding="utf-8")
    doc = json.loads((out / "uncertainty.json").read_text(encoding="utf-8"))
    assert (out / "uncertainty.png").stat().st_size > 10_000
    for heading in ("## ambiguous", "## brain", "## Targets (issue #6)", "reproduce: `toporeg bench uncertainty"):
        assert heading in md
    assert [len(t["rows"]) for t in doc["tasks"]] == [4, 0] and not doc["tasks"][0]["errors"]
    assert sorted(doc["tasks"][1]["errors"]) == sorted(METHODS) and "no model" in md
    amb = {r["method"]: r for r in doc["tasks"][0]["rows"]}
    assert amb["unet"]["diversity"] == 0.0 and all(0.0 <= r["ged"] <= 2.0 for r in amb.values())
    assert doc["cpu_timing"]["seconds"] > 0 and any("GED" in t["target"] for t in doc["targets"])
