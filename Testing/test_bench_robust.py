"""`toporeg bench dio` and `toporeg bench carl` end to end on one 2D pair (--quick), with tiny untrained DIO and CARL
models written here and the bundled VoxelMorph-diff: the table, JSON and figure are written and every number is
finite. The scores of untrained models mean nothing; the benchmark's plumbing does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toporeg.bench import robust_cases as rc
from toporeg.carl import CARL
from toporeg.cli.main import main
from toporeg.dio import DIOFeatureNet
from toporeg.models.weights import save_model

GRID = {"shape": [96, 112], "spacing_mm": [2.0, 2.0]}   # the 2D models' grid


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):  # conftest: the solver's thousands of tiny ops are fastest on one thread
    yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust_models")
    torch.manual_seed(0)
    dio, _ = save_model(DIOFeatureNet(ndim=2, channels=4, encoder=(4, 8), decoder=(8, 4), final_convs=(4,),
                                      scales=(2, 1)), d / "tiny_dio",
                        {"input_domain": GRID, "solver": {"transform": "displacement", "iterations": [4, 2]}})
    carl, _ = save_model(CARL(ndim=2, channels=4, blocks=1, pad=3, unet_encoder=(4, 8), unet_final=(4,)),
                         d / "tiny_carl", {"input_domain": GRID})
    return {"dio": str(dio), "carl": str(carl)}


def _finite_summary(doc: dict) -> None:
    for method, conditions in doc["summary"].items():
        for condition, metrics in conditions.items():
            assert metrics, f"{method} / {condition} has no result"
            for name, stats in metrics.items():
                assert np.isfinite(stats["mean"]) and np.isfinite(stats["sd"]), (method, condition, name)
    assert not [r for r in doc["rows"] if "error" in r]


def test_moved_case_keeps_the_known_field_consistent():
    """The true field of a moved pair maps fixed points onto the moved content: u' = S(x + u) − x."""
    case = rc.base_cases(1)[0].case
    s = rc.similarity_ras(case.fixed, (8.0, -4.0), 10.0, 1.1)
    moved = rc.moved(case, s, "test")
    assert moved.moving.same_grid(case.moving) and moved.gt_u_ras.shape == case.gt_u_ras.shape
    shifted = rc.moved(case, rc.similarity_ras(case.fixed, (8.0, 0.0)), "shift")
    np.testing.assert_allclose(shifted.gt_u_ras - case.gt_u_ras, np.broadcast_to([8.0, 0.0, 0.0],
                                                                                 case.gt_u_ras.shape), atol=1e-4)


@pytest.fixture(autouse=True)
def _no_warm_up(monkeypatch):
    """The untimed warm-up calls only steady the timings: skipped here to keep the test short."""
    monkeypatch.setattr(rc, "warm_up", lambda *args, **kwargs: None)


def test_bench_dio_quick_writes_finite_tables(tmp_path, models):
    out = tmp_path / "out"
    assert main(["bench", "dio", "--quick", "--out", str(out), "--dio-model", models["dio"]]) == 0
    doc = json.loads((out / "dio.json").read_text(encoding="utf-8"))
    md = (out / "dio.md").read_text(encoding="utf-8")
    assert (out / "dio.png").exists()
    assert "toporeg bench dio --quick" in md and "| DIO displacement (as trained) |" in md
    assert doc["trained_solver"] == "displacement" and len(doc["cases"]) == 1
    assert {r["condition"] for r in doc["rows"]} == {"in-domain", "anisotropic", "contrast"}
    assert any(m.startswith("DIO svf") for m in doc["methods"])
    _finite_summary(doc)


def test_bench_carl_quick_writes_finite_tables(tmp_path, models):
    out = tmp_path / "out"
    assert main(["bench", "carl", "--quick", "--out", str(out), "--carl-model", models["carl"]]) == 0
    doc = json.loads((out / "carl.json").read_text(encoding="utf-8"))
    md = (out / "carl.md").read_text(encoding="utf-8")
    assert (out / "carl.png").exists()
    assert "toporeg bench carl --quick" in md and "| method | none | 30 mm | 20° | × 1.1 |" in md
    _finite_summary(doc)
    eq = doc["equivariance"]
    assert {r["method"] for r in eq} == {"CARL", "CARL depth 1", "VoxelMorph-diff, no pre-alignment"}
    for r in eq:
        assert 0 <= r["equivariance_mean_mm"] < np.inf and 0 <= r["equivariance_p95_mm"] < np.inf
