"""The learned methods' options and command line: what each method refuses, and the CLI wiring of dio and carl with
saved tiny models (outputs, report, landmark files, 2D displacement files readable by ITK)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from learned_fixtures import CARD_GRID, FIXED_AFFINE, SHAPE, SHIFT_MM, TINY_CARL, blobs, values_at

from toporeg.carl import CARL
from toporeg.dio import DIOFeatureNet
from toporeg.errors import InputError
from toporeg.io import Volume, load_volume, save_volume
from toporeg.methods import MethodOptions, model_for, register_with_method
from toporeg.models.weights import save_model
from toporeg.registration import RegistrationSettings
from toporeg.transforms import physical_from_itk_volume


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):  # conftest: the solver's thousands of tiny ops are fastest on one thread
    yield


# --- options ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,options,message", [
    ("dio", MethodOptions(depth=2), "depth applies to --method carl, not dio"),
    ("carl", MethodOptions(iterations=(5, 5, 5)), "iterations applies to --method dio, not carl"),
    ("carl", MethodOptions(prompt_points=(np.zeros((1, 3)),) * 2), "landmark prompt applies to --method dio"),
    ("learned", MethodOptions(prompt_labels=(None, None)), "label prompt applies to --method dio"),
    ("dio", MethodOptions(refine=3), "refine applies to --method learned/carl, not dio"),
    ("optimize", MethodOptions(refine=3), "refine applies to --method learned/carl, not optimize"),
    ("optimize", MethodOptions(model="carl_2d"), "model applies to --method learned/dio/carl, not optimize"),
    ("optimize", MethodOptions(prealign="none"), "prealign applies to --method learned/dio/carl"),
    ("carl", MethodOptions(prealign="rigid"), "prealign must be one of affine, none"),
    ("carl", MethodOptions(refine=-1), "refine must be >= 0"),
    ("carl", MethodOptions(depth=4), "depth must be 1, 2 or 3"),
    ("elastix", MethodOptions(), "unknown method 'elastix'"),
])
def test_method_options_refuse_what_a_method_cannot_use(method, options, message):
    with pytest.raises(InputError, match=message):
        options.check(method)


def test_method_options_accept_what_each_method_uses():
    MethodOptions().check("optimize")
    MethodOptions(model="x", refine=2, depth=1, prealign="affine").check("carl")
    MethodOptions(model="x", iterations=(1, 2, 3), prealign="none",
                  prompt_points=(np.zeros((1, 3)), np.zeros((1, 3)))).check("dio")
    MethodOptions(model="x", refine=5).check("learned")


def test_register_with_method_refuses_weights_and_finds_no_missing_model(monkeypatch, tmp_path):
    fixed = blobs(SHAPE, FIXED_AFFINE)
    weights = fixed.with_data(np.ones(SHAPE, np.float32))
    for method in ("learned", "dio", "carl"):
        with pytest.raises(InputError, match=f"apply to --method optimize, not {method}"):
            register_with_method(method, fixed, fixed, RegistrationSettings(), weights=weights, device="cpu")
    monkeypatch.setenv("TOPOREG_RESOURCES", str(tmp_path / "no_resources"))
    monkeypatch.setenv("TOPOREG_MODELS", str(tmp_path))            # an empty user model folder
    with pytest.raises(InputError, match="no 3D model for --method carl") as err:
        model_for("carl", 3)
    assert "toporeg train carl" in str(err.value) and "carl_3d_2mm" in str(err.value)
    with pytest.raises(InputError, match="toporeg train dio"):
        model_for("dio", 2)
    # a model named explicitly is resolved as given; a missing file says so
    with pytest.raises(InputError, match="missing"):
        model_for("carl", 2, str(tmp_path / "nothing.safetensors"))


# --- command line -------------------------------------------------------------------------------------------

CLI = ["--progress", "none", "--device", "cpu", "--fast"]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """2D NIfTI pair (moving = fixed shifted by SHIFT_MM) and tiny untrained DIO and CARL models with cards."""
    d = tmp_path_factory.mktemp("learned_cli")
    fixed, moving = blobs(SHAPE, FIXED_AFFINE), blobs(SHAPE, FIXED_AFFINE, SHIFT_MM)
    torch.manual_seed(0)
    dio, _ = save_model(DIOFeatureNet(ndim=2, channels=4, encoder=(4, 8), decoder=(8, 4), final_convs=(4,),
                                      scales=(2, 1)), d / "tiny_dio",
                        {"input_domain": CARD_GRID, "solver": {"iterations": [6, 4]}})
    carl, _ = save_model(CARL(**TINY_CARL), d / "tiny_carl", {"input_domain": CARD_GRID})
    return {"fixed": save_volume(fixed, d / "fixed.nii.gz"), "moving": save_volume(moving, d / "moving.nii.gz"),
            "dio": dio, "carl": carl}


def _run(files, out, *args) -> int:
    from toporeg.cli.main import main

    return main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), *CLI, *args])


def _outputs(out):
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for name in ("warped", "displacement", "inverse_displacement", "jacobian"):
        assert (out / f"{name}.nii.gz").exists(), name
    assert load_volume(out / "warped.nii.gz").grid_shape == SHAPE
    assert set(report["files"]) >= {"warped", "displacement", "inverse_displacement", "jacobian", "affine"}
    return report


def test_cli_dio_with_a_saved_model(cli_files, tmp_path):
    out = tmp_path / "dio"
    assert _run(cli_files, out, "--method", "dio", "--transform", "affine", "--model", str(cli_files["dio"]),
                "--iterations", "3", "2") == 0
    report = _outputs(out)
    settings = report["registration_settings"]
    assert report["method"] == "dio" and settings["method"] == "dio" and settings["prealign"] == "affine"
    assert settings["solver"]["transform"] == "affine" and settings["solver"]["iterations"] == [3, 2]
    assert settings["model"] == "tiny_dio" and report["metrics"]["model"] == "tiny_dio"
    assert not (out / "inverse_consistency.nii.gz").exists()


def test_cli_dio_landmark_files_drive_the_solver(tmp_path):
    """A saved DIO model whose feature heads are zero (its features carry no information), so only the landmark
    files (fixed in RAS, moving in LPS) can move the solver: the written field maps the landmarks onto each other."""
    blank = DIOFeatureNet(ndim=2, channels=4, encoder=(4, 8), decoder=(8, 4), final_convs=(4,), scales=(2, 1))
    for head in blank.heads:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    card = {"input_domain": CARD_GRID, "solver": {"iterations": [30, 20]}}
    model, _ = save_model(blank, tmp_path / "blank_dio", card)
    # (i, j, 1) arrays: such 2D files get a readable displacement.nii.gz ((i, j) ones: see test_cli_2d_displacement_file_reads_back_as_the_itk_field)
    image = Volume(blobs(SHAPE, FIXED_AFFINE).data[..., None], FIXED_AFFINE)
    files = {"fixed": save_volume(image, tmp_path / "f.nii.gz"), "moving": save_volume(image, tmp_path / "m.nii.gz")}
    pts_f = image.voxel_to_ras(np.array([[8, 12, 0], [22, 12, 0], [10, 28, 0], [21, 27, 0]], float))
    f_csv, m_csv = tmp_path / "f.csv", tmp_path / "m.csv"
    f_csv.write_text("\n".join(f"{p[0]},{p[1]},{p[2]}" for p in pts_f))
    m_csv.write_text("# LPS\n" + "\n".join(f"{-p[0] - 4.0},{-p[1] + 3.0},{p[2]}" for p in pts_f))  # RAS + (4, −3)
    out = tmp_path / "prompted"
    assert _run(files, out, "--method", "dio", "--prealign", "none", "--model", str(model),   # svf: the default
                "--fixed-landmarks", str(f_csv), "--moving-landmarks", str(m_csv), "--landmark-weight", "1.0") == 0
    settings = _outputs(out)["registration_settings"]
    assert settings["prealign"] == "none" and settings["prompts"]["landmarks"] == 4
    assert settings["prompts"]["landmark_weight"] == 1.0 and settings["solver"]["transform"] == "svf"
    u = physical_from_itk_volume(load_volume(out / "displacement.nii.gz"))
    err = np.linalg.norm(values_at(u, image, pts_f) - [4.0, -3.0, 0.0], axis=-1)
    assert err.max() < 1.0, err                                    # 5 mm without the prompt


def test_cli_carl_with_a_saved_model(cli_files, tmp_path):
    out = tmp_path / "carl"
    assert _run(cli_files, out, "--method", "carl", "--model", str(cli_files["carl"]), "--depth", "2") == 0
    report = _outputs(out)
    settings = report["registration_settings"]
    assert report["method"] == "carl" and settings["method"] == "carl"
    assert settings["prealign"] == "none" and settings["depth"] == 2 and settings["refine_steps"] == 0
    icon = load_volume(out / "inverse_consistency.nii.gz")
    assert icon.grid_shape == SHAPE and np.all(np.isfinite(icon.data)) and np.all(np.asarray(icon.data) >= 0)
    assert "inverse_consistency_mean_mm" in report["metrics"]


@pytest.mark.parametrize("args,message", [
    (["--method", "carl", "--iterations", "5", "5", "5"], "iterations applies to --method dio, not carl"),
    (["--method", "optimize", "--depth", "2"], "depth applies to --method carl, not optimize"),
    (["--method", "dio", "--fixed-landmarks", "FIXED_PTS"], "give both --fixed-landmarks and --moving-landmarks"),
    (["--method", "dio", "--transform", "rigid"], "the DIO solver has no rigid transform"),
    (["--method", "optimize", "--refine", "3"], "refine applies to --method learned/carl, not optimize"),
    (["--method", "dio", "--fixed-labels", "FIXED_PTS"], "--fixed-labels (a dio label prompt) needs --moving-labels"),
])
def test_cli_refuses_flags_the_method_cannot_use(cli_files, tmp_path, capsys, args, message):
    pts = tmp_path / "pts.csv"
    pts.write_text("1,2,0\n")
    args = [str(pts) if a == "FIXED_PTS" else a for a in args]
    out = tmp_path / "refused"
    assert _run(cli_files, out, *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()                                          # a refused run leaves no outputs


def test_cli_2d_displacement_file_reads_back_as_the_itk_field(cli_files, tmp_path):
    out = tmp_path / "carl"
    assert _run(cli_files, out, "--method", "carl", "--model", str(cli_files["carl"]), "--depth", "1") == 0
    field = load_volume(out / "displacement.nii.gz")
    assert field.has_channels and field.grid_shape == SHAPE
    fixed, moving = load_volume(cli_files["fixed"]), load_volume(cli_files["moving"])
    res = register_with_method("carl", fixed, moving, RegistrationSettings(),
                               MethodOptions(model=str(cli_files["carl"]), depth=1), device="cpu")
    np.testing.assert_allclose(physical_from_itk_volume(field), res.displacement_ras, atol=1e-4)
