"""`toporeg bench neuralizer` pieces that need no trained model: the U-Net baseline learns from its examples, the
targets are judged from the scores, and the report files are written."""

from __future__ import annotations

import json

import numpy as np
import torch

from toporeg.bench.neuralizer import targets
from toporeg.bench.neuralizer_baseline import predict, train_task_unet
from toporeg.bench.neuralizer_report import write_outputs


def _squares(n: int, g: torch.Generator):
    x, y = torch.rand(n, 3, 32, 32, generator=g) * 0.2, torch.zeros(n, 1, 32, 32)
    for i in range(n):
        r, c = torch.randint(2, 18, (2,), generator=g).tolist()
        y[i, :, r:r + 10, c:c + 10] = 1
    x[:, :1] += 0.7 * y
    return x, y


def test_baseline_unet_learns_its_examples():
    g = torch.Generator().manual_seed(0)
    x, y = _squares(4, g)
    model = train_task_unet(x, y, True, steps=60, seed=0)
    xt, yt = _squares(4, g)
    pred = predict(model, xt) >= 0.5
    dice = 2 * (pred & (yt > 0.5)).sum() / (pred.sum() + (yt > 0.5).sum())
    assert dice > 0.8


def _task(name, seen, nz, unet, metric="Dice"):
    return {"name": name, "task": "segment", "seen": seen, "metric": metric, "instances": [],
            "scores": {str(n): {"neuralizer": a, "unet": b, "copy": 0.5} for n, a, b in zip((1, 8), nz, unet)},
            "example": {k: np.zeros((4, 4)) for k in ("target_in", "target_out", "context_in", "context_out",
                                                     "neuralizer", "unet")} | {"n": 1}}


def test_targets_follow_the_scores():
    tasks = [_task("segment AAL regions", True, (0.80, 0.90), (0.1, 0.5)),
             _task("segment Brodmann areas", False, (0.78, 0.86), (0.2, 0.9))]
    result = {t["target"].split(" (")[0] + ("" if "beats" not in t["target"] else " beats"): t for t in targets(tasks, (1, 8))}
    beats = result["segment Brodmann areas beats"]
    assert beats["met"] is False and beats["measured"] == "wins at 1/2 context sizes"  # loses at n = 8
    within = next(t for t in result.values() if t["target"].startswith("unseen"))
    assert within["met"] is True and "(+3.5 %)" in within["measured"]  # (0.85 - 0.82) / 0.85


def test_report_files(tmp_path):
    doc = {"command": "toporeg bench neuralizer --fast", "model": "m.safetensors", "card": {}, "max_context": 8,
           "sizes": [1, 8], "repeats": 1, "baseline_steps": 20,
           "tasks": [_task("segment AAL regions", True, (0.8, 0.9), (0.1, 0.95))], "targets": [],
           "timing": {"cpu_slice": {"context": 8, "threads": 2, "median_s": 0.3}, "gpu_slice": None,
                      "cpu_volume": {"seconds": 40.0, "volume": "v", "slices": 96, "contexts": 4, "label": 77,
                                     "dice_3d": 0.7, "copy_dice_3d": 0.8}}}
    paths = write_outputs(doc, tmp_path)
    assert [p.name for p in paths] == ["neuralizer.json", "neuralizer.md", "neuralizer.png"]
    md = paths[1].read_text(encoding="utf-8")
    assert "| segment AAL regions | yes | Dice | **0.800** / 0.100 / 0.500 | 0.900 / 0.950 / 0.500 |" in md
    assert "GPU: not measured" in md and "3D Dice 0.700" in md
    saved = json.loads(paths[0].read_text(encoding="utf-8"))
    assert "example" not in saved["tasks"][0] and saved["commit"]
