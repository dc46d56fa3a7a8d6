"""`toporeg bench topology`: a tiny end-to-end run (every method, outputs written) and a known-answer AUC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toporeg.bench import topology as bench
from toporeg.topology.synthetic import TopologyCase

CACHE = Path(__file__).resolve().parents[1] / ".bench-cache" / "toporeg_templates_2mm.npz"


def _phantom_subject(shape, seed):
    """(image, mask, tissue): an ellipsoid brain with a GM shell, WM core and a CSF column, subject-specific size."""
    rng = np.random.default_rng(seed)
    radii = 0.8 + 0.08 * rng.random(3)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, radii)))
    brain = r < 1
    tissue = np.where(np.hypot(grids[0], grids[1]) < 0.2, 1, np.where(r < 0.7, 3, 2)) * brain
    image = np.array([0.0, 0.25, 0.6, 0.9])[tissue] + 0.03 * rng.standard_normal(shape) * brain
    return image.clip(0, 1).astype(np.float32), brain.astype(np.uint8), tissue.astype(np.uint8)


def _cache(tmp_path: Path) -> Path:
    """The real template cache when built, else a phantom one with the same keys (two 'subjects')."""
    if CACHE.exists():
        return CACHE
    arrays = {}
    for seed, name in enumerate(bench.SUBJECTS):
        for key, value in zip(("image", "mask", "tissue"), _phantom_subject((96, 112, 48), seed)):
            arrays[f"{name}_{key}"] = value
    path = tmp_path / "cache.npz"
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    np.savez(path, **arrays, grid_affine=affine, meta=np.frombuffer(b"{}", np.uint8))
    return path


def _tiny_models(tmp_path: Path) -> tuple[Path, Path]:
    """An (untrained) tiny DeepSim extractor and a tiny semantic topology CVAE with running α, β: they exercise the
    optimize-semantic and learned rows."""
    from toporeg.models.deepsim import DeepSimExtractor
    from toporeg.models.weights import save_model
    from toporeg.topology.cvae import TopologyCVAE

    torch.manual_seed(0)
    extractor = DeepSimExtractor(2, 1, (4, 8, 8), n_classes=4)
    deepsim, _ = save_model(extractor, tmp_path / "tiny_deepsim.safetensors")
    cvae = TopologyCVAE(2, (4, 8), (8, 4), (4,), features="semantic", extractor=extractor.config)
    cvae.extractor.load_state_dict(extractor.state_dict())
    cvae.alpha.fill_(1.0)
    cvae.beta.fill_(1.0)
    model, _ = save_model(cvae, tmp_path / "tiny_topology.safetensors")
    return deepsim, model


def test_quick_run_writes_every_method_and_valid_aucs(tmp_path):
    deepsim, model = _tiny_models(tmp_path)
    out = tmp_path / "out"
    rc = bench.main(["--quick", "--out", str(out), "--cache", str(_cache(tmp_path)), "--deepsim-model", str(deepsim),
                     "--model", str(model), "--seed", "1", "--subjects", "1"])
    assert rc == 0
    doc = json.loads((out / bench.JSON_NAME).read_text(encoding="utf-8"))
    md = (out / bench.MD_NAME).read_text(encoding="utf-8")
    expected = {bench.REFERENCE, "TopoReg optimize-semantic", "TopoReg learned tiny_topology", *bench.BASELINES}
    assert {s["name"] for s in doc["sets"]} == {"brain_2d", "cells_2d", "outlier_2d"}
    for s in doc["sets"]:
        assert not s["errors"], s["errors"]
        assert {r["method"] for r in s["rows"]} == expected
        for r in s["rows"]:
            assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["p2_5"] <= r["p97_5"] <= 1.0
            assert f"| {r['method']} | {r['auc']:.3f} |" in md
        assert s["target"]["met"] in (True, False)  # a semantic method ran, so the target is judged
        assert (out / f"{bench.PNG_STEM}_roc_{s['name']}.png").stat().st_size > 0
    assert (out / f"{bench.PNG_STEM}_examples.png").exists()
    assert doc["topology_aware"][0]["cases"] == 1 and "ring" in doc["topology_aware"][0]["mean"]["aware"]
    assert "reproduce: `toporeg bench topology --quick" in md and doc["commit"]


def test_intensity_baseline_auc_is_one_when_the_change_is_the_only_difference():
    """Known answer: J = I with a bright blob in a flat region, no deformation, no noise. The squared residual is
    large only inside the blob, so every changed voxel outranks every unchanged one: pooled AUC exactly 1."""
    shape = (48, 56)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    moving = 0.3 + 0.1 * np.sin(ii / 7.0) * np.cos(jj / 9.0)
    moving[(ii - 24) ** 2 / 400 + (jj - 28) ** 2 / 576 > 1] = 0.0  # an elliptic 'organ' on a dark background
    cases = []
    for centre in ((20, 22), (27, 33)):
        blob = torch.as_tensor((ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= 9)[None, None]
        img = torch.as_tensor(moving, dtype=torch.float32)[None, None]
        cases.append(TopologyCase(torch.where(blob, torch.ones_like(img), img), img, blob, kind="blob"))
    size = bench.QUICK
    plan = bench.plan_methods(2, np.diag([2.0, 2.0, 2.0, 1.0]), size, None, ())
    assert plan.fitters[0].rescore is not None  # Q re-scores with the control set's shared Σ_f, α, β
    scores = bench.score_pairs("trivial", "blob only", cases, plan, log=lambda _msg: None)
    rows = {r["method"]: r for r in bench.summarise(scores, n_boot=50, seed=0)["rows"]}
    assert rows["intensity"]["auc"] == pytest.approx(1.0)
    assert rows[bench.REFERENCE]["auc"] > 0.95
