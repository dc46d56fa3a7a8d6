"""`toporeg neuralize` (issue #7): prediction/probability on the target's grid and report.json, JSON progress,
saved and reused context sets, cancel-file (no outputs), clear errors for bad inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from test_neuralizer_inference import affine, pair
from toporeg.cli.main import main
from toporeg.io import Volume, save_volume
from toporeg.models.weights import save_model
from toporeg.neuralizer.model import Neuralizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny random Neuralizer (weights + card), an oblique LPS target and two context pairs, on disk."""
    folder = tmp_path_factory.mktemp("nzcli")
    torch.manual_seed(0)
    model, _ = save_model(Neuralizer(channels=4, levels=2), folder / "tiny.safetensors",
                          {"neuralizer": {"spacing_mm": 2.0, "max_context": 4, "planes": ["axial"]}})
    out = {"model": model, "folder": folder}
    target = pair((30, 28, 16), affine((0.2, -0.1, 0.3), (1.7, 1.9, 2.6), (28.0, 34.0, -18.0)))[0]
    out["target"] = save_volume(target, folder / "target.nii.gz")
    for i in range(2):
        img, lab = pair((28, 30, 20), affine((0.0, 0.0, 0.1 * i), (2.0, 2.0, 2.0), (30.0, 34.0, -22.0)), seed=i)
        out[f"img{i}"] = save_volume(img, folder / f"img{i}.nii.gz")
        out[f"lab{i}"] = save_volume(lab, folder / f"lab{i}.nii.gz")
    return out


def run_cli(*args, progress="none") -> int:
    return main(["neuralize", *map(str, args), "--progress", progress, "--device", "cpu"])


def test_cli_writes_prediction_probability_and_report(files, tmp_path):
    out = tmp_path / "out"
    assert run_cli(files["target"], "--context", files["img0"], files["lab0"], "--context", files["img1"],
                   files["lab1"], "--task", "segment", "--label-value", "1", "--plane", "coronal", "--out", out,
                   "--model", files["model"], "--no-align") == 0
    assert sorted(p.name for p in out.iterdir()) == ["prediction.nii.gz", "probability.nii.gz", "report.json"]
    target = nib.load(str(files["target"]))
    for name in ("prediction.nii.gz", "probability.nii.gz"):
        img = nib.load(str(out / name))
        assert img.shape == target.shape
        np.testing.assert_allclose(img.affine, target.affine, atol=1e-4)
    pred = np.asarray(nib.load(str(out / "prediction.nii.gz")).dataobj)
    prob = np.asarray(nib.load(str(out / "probability.nii.gz")).dataobj)
    np.testing.assert_array_equal(pred, (prob >= 0.5).astype(pred.dtype))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["command"] == "neuralize" and report["timings"]["total_seconds"] > 0
    assert report["task"] == "segment" and report["label_value"] == 1 and report["plane"] == "coronal"
    assert report["n_contexts"] == 2 and report["context_size"] == 4 and report["bootstrapped"]
    assert [c["image"] for c in report["contexts"]] == [str(files["img0"]), str(files["img1"])]
    assert report["files"] == {"prediction": "prediction.nii.gz", "probability": "probability.nii.gz"}
    assert report["model"]["path"] == str(files["model"]) and "neuralize.network" in report["timings"]


def test_cli_json_progress_and_a_saved_context_set(files, tmp_path, capsys):
    saved = tmp_path / "sets" / "blobs.json"
    assert run_cli(files["target"], "--context", files["img0"], files["lab0"], "--task", "segment",
                   "--label-value", "2", "--out", tmp_path / "a", "--model", files["model"], "--no-align",
                   "--save-context-set", saved, progress="json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines and all(set(d) == {"stage", "fraction", "message"} for d in lines)
    assert {"neuralize", "done"} <= {d["stage"] for d in lines} and lines[-1]["fraction"] == 1.0
    fractions = [d["fraction"] for d in lines]
    assert fractions == sorted(fractions)
    raw = json.loads(saved.read_text(encoding="utf-8"))
    assert raw["name"] == "blobs" and raw["label_value"] == 2 and raw["pairs"][0]["image"].startswith("../")
    # the saved set alone defines the task: same prediction without --context / --task / --label-value
    assert run_cli(files["target"], "--context-set", saved, "--out", tmp_path / "b", "--model", files["model"],
                   "--no-align") == 0
    a, b = (np.asarray(nib.load(str(tmp_path / d / "probability.nii.gz")).dataobj) for d in ("a", "b"))
    np.testing.assert_array_equal(a, b)
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["label_value"] == 2 and report["context_set"]["name"] == "blobs"


def test_cli_cancel_file_present_at_start_leaves_no_outputs(files, tmp_path, capsys):
    stop = tmp_path / "stop"
    stop.write_text("", encoding="utf-8")
    out, saved = tmp_path / "cancelled", tmp_path / "set.json"
    assert run_cli(files["target"], "--context", files["img0"], files["lab0"], "--task", "segment", "--out", out,
                   "--model", files["model"], "--cancel-file", stop, "--save-context-set", saved) == 130
    assert "cancelled" in capsys.readouterr().err
    assert not out.exists() and not saved.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cancelled")]


def test_cli_bad_inputs_give_clear_errors(files, tmp_path, capsys):
    ctx = ["--context", files["img0"], files["lab0"]]
    common = ["--model", files["model"], "--no-align"]

    def error(*args) -> str:
        assert run_cli(*args) == 2
        return capsys.readouterr().err

    folder = files["folder"]
    target = nib.load(str(files["target"]))
    nan = np.asarray(target.dataobj, np.float32).copy()
    nan[2, 2, 2] = np.nan
    nib.Nifti1Image(nan, target.affine).to_filename(str(folder / "nan.nii.gz"))
    assert "target image: image contains 1 NaN" in error(folder / "nan.nii.gz", *ctx, "--task", "segment",
                                                          "--out", tmp_path / "o1", *common)
    nib.Nifti1Image(np.stack([nan * 0 + 1, np.asarray(target.dataobj, np.float32)], -1),
                    target.affine).to_filename(str(folder / "4d.nii.gz"))
    assert "expected a single-channel image, got 2 channels" in error(folder / "4d.nii.gz", *ctx, "--task",
                                                                        "segment", "--out", tmp_path / "o2", *common)
    assert "context 1: its output" in error(files["target"], "--context", files["img0"], files["target"], "--task",
                                            "image", "--out", tmp_path / "o3", *common)
    assert "label 9 does not occur" in error(files["target"], *ctx, "--task", "segment", "--label-value", "9",
                                             "--out", tmp_path / "o4", *common)
    assert "--task segment|image is required" in error(files["target"], *ctx, "--out", tmp_path / "o5", *common)
    missing = error(files["target"], "--context", folder / "nope.nii.gz", files["lab0"], "--task", "segment",
                    "--out", tmp_path / "o6", *common)
    assert "nope.nii.gz: image of context pair 1 not found" in missing
    save_volume(Volume(np.asarray(target.dataobj, np.float32), target.affine), tmp_path / "o7" / "prediction.nii.gz")
    assert "would overwrite this input" in error(tmp_path / "o7" / "prediction.nii.gz", *ctx, "--task", "segment",
                                                 "--out", tmp_path / "o7", *common)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))
