"""The `toporeg` command line as a user runs it: outputs, report.json, progress, cancel, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import smooth_blobs, textured_phantom
from toporeg.cli.main import main
from toporeg.io import Volume, load_volume, save_volume
from toporeg.transforms import physical_from_itk_volume

FAST = ["--fast", "--progress", "none", "--device", "cpu"]


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path, Path]:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    img = textured_phantom((24, 26, 22), seed=4)
    fixed = save_volume(Volume(img, aff), tmp_path / "fixed.nii.gz")
    shifted = np.roll(img, 1, axis=0)
    moving = save_volume(Volume(shifted, aff), tmp_path / "moving.nrrd")
    labels = save_volume(Volume((shifted > np.percentile(shifted, 70)).astype(np.uint8) * 4, aff, is_label=True),
                         tmp_path / "labels.nii.gz")
    return fixed, moving, labels


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("info", "register", "demo"):
        assert name in out


def test_info_reports_geometry_and_labels(pair, capsys):
    fixed, _, labels = pair
    assert main(["info", str(fixed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [24, 26, 22] and info["spacing_mm"] == [2.0, 2.0, 2.0] and info["orientation"] == "RAS"
    assert main(["info", str(labels), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["is_label_map"] and info["label_count"] == 1


def test_register_writes_every_output_on_the_fixed_grid(pair, tmp_path):
    fixed, moving, labels = pair
    out = tmp_path / "out"
    assert main(["register", str(fixed), str(moving), "--out", str(out), "--moving-labels", str(labels), *FAST]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"warped.nii.gz", "displacement.nii.gz", "inverse_displacement.nii.gz", "jacobian.nii.gz",
            "warped_labels.nii.gz", "report.json", "affine.tfm"} <= names
    ref = load_volume(fixed)
    for name in ("warped.nii.gz", "jacobian.nii.gz", "warped_labels.nii.gz", "displacement.nii.gz"):
        vol = load_volume(out / name)
        assert vol.grid_shape == ref.grid_shape and np.allclose(vol.affine, ref.affine, atol=1e-5)
    u = physical_from_itk_volume(load_volume(out / "displacement.nii.gz"))
    centre = u[8:16, 8:18, 8:14]
    assert abs(np.median(centre[..., 0]) - 2.0) < 0.6         # content moved +1 voxel = +2 mm along R
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["timings"]["total_seconds"] > 0 and "folding_percent" in report["metrics"]
    assert report["versions"]["toporeg"]


def test_json_progress_lines_for_gui_front_ends(pair, tmp_path):
    fixed, moving, _ = pair
    proc = subprocess.run([sys.executable, "-m", "toporeg.cli.main", "register", str(fixed), str(moving),
                           "--out", str(tmp_path / "o"), "--fast", "--device", "cpu", "--transform", "affine",
                           "--progress", "json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events and all({"stage", "fraction", "message"} <= set(e) for e in events)
    assert events[-1]["fraction"] == 1.0 and events[-1]["stage"] == "done"


def test_cancel_file_stops_without_partial_outputs(pair, tmp_path):
    fixed, moving, _ = pair
    cancel = tmp_path / "cancel"
    cancel.write_text("", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["register", str(fixed), str(moving), "--out", str(out), "--cancel-file", str(cancel), *FAST]) == 130
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


@pytest.mark.parametrize("make_args,problem", [
    (lambda p, t: ["info", str(t / "nope.nii.gz")], "file not found"),
    (lambda p, t: ["register", str(p[0]), str(t / "x.png"), "--out", str(t / "o")], "unsupported file type"),
    (lambda p, t: ["register", str(p[0]), str(p[1]), "--out", str(t / "o"), "--method", "dio"], "toporeg train dio"),
])
def test_bad_input_one_line_error_and_nothing_written(pair, tmp_path, capsys, make_args, problem):
    (tmp_path / "x.png").write_bytes(b"png")
    assert main(make_args(pair, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1 and err.startswith("toporeg: error:")
    assert not (tmp_path / "o").exists()


def test_2d_vs_3d_pair_is_refused(pair, tmp_path, capsys):
    fixed, _, _ = pair
    flat = save_volume(Volume(smooth_blobs((20, 20)), np.eye(4)), tmp_path / "flat.nii.gz")
    assert main(["register", str(fixed), str(flat), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "2D moving image to a 3D fixed image" in capsys.readouterr().err


def test_learned_method_runs_a_saved_model_and_writes_uncertainty(pair, tmp_path):
    """Wiring of --method learned --model: an (untrained) tiny VoxelMorph-diff saved with its card."""
    from toporeg.models.voxelmorph_diff import VoxelMorphDiff
    from toporeg.models.weights import save_model

    weights, _ = save_model(VoxelMorphDiff(3, encoder=(4, 8), decoder=(8,), final_convs=(8,)), tmp_path / "tiny",
                            {"input_domain": {"shape": [16, 16, 16], "spacing_mm": [2.0, 2.0, 2.0]}})
    fixed, moving, _ = pair
    out = tmp_path / "learned"
    assert main(["register", str(fixed), str(moving), "--out", str(out), "--method", "learned",
                 "--model", str(weights), *FAST]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["method"] == "learned"
    unc = load_volume(out / "uncertainty.nii.gz")
    assert unc.grid_shape == load_volume(fixed).grid_shape and np.all(np.isfinite(unc.data))


def test_demo_on_bundled_sample_data_improves_overlap(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "fast", "--progress", "none", "--device", "cpu"]) == 0
    metrics = json.loads((out / "report.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["brain_mask_dice_after"] > metrics["brain_mask_dice_before"] + 0.01
    assert metrics["folding_percent"] < 0.05
    assert (out / "registration" / "warped_labels.nii.gz").exists()
