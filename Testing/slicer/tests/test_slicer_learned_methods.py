"""The learned methods (dio, carl) through RegistrationLogic on real MRML: in process and through the CLI, with the
bundled 2D models, on an axial slice of the bundled MNI152 sample whose moving copy is translated by 12 mm."""

from __future__ import annotations

import numpy as np
import pytest
import slicer.util

from toporeg_slicer_testing import SAMPLE_DATA, MiniSlicer, correlation
from toporeg.io import Volume
from toporeg.methods import model_for
from TopoRegLogic import nodes
from TopoRegLogic.params import RegistrationParams
from TopoRegLogic.registration_logic import RegistrationLogic

SHIFT_VOXELS = 6  # 12 mm at 2 mm: well inside what pre-alignment (dio) and coordinate attention (carl) recover


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    for method in ("dio", "carl"):
        try:
            model_for(method, 2)
        except Exception as exc:  # noqa: BLE001 - a checkout without the trained weights
            pytest.skip(f"bundled 2D {method} model missing: {exc}")
    mini = MiniSlicer(tmp_path_factory.mktemp("mini"))
    full = nodes.volume_from_node(nodes.load_volume_node(mini.scene, SAMPLE_DATA / "mni152_t1_2mm.nii.gz", "MNI"))
    k = full.grid_shape[2] // 2
    affine = full.affine.copy()
    affine[:3, 3] = full.voxel_to_ras(np.array([0, 0, k]))
    data = np.asarray(full.data[:, :, k:k + 1], np.float32)
    fixed = nodes.new_volume_node(mini.scene, Volume(data, affine), "MNI slice")
    moving = nodes.new_volume_node(mini.scene, Volume(np.roll(data, SHIFT_VOXELS, axis=0), affine), "MNI slice moved")
    yield mini, fixed, moving
    mini.close()


def _brain(fixed) -> np.ndarray:
    data = nodes.volume_from_node(fixed).data
    return data > np.percentile(data, 60)


def test_dio_in_process_registers_the_slice_and_the_transform_node_holds_its_field(pair):
    mini, fixed, moving = pair
    logic = RegistrationLogic(mini.scene, volumes_logic=mini.volumes_logic)
    out = mini.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "dio warped")
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, method="dio", transformModel="svf",
                                device="cpu", outputVolume=out, applyToMoving=False)  # the next test reuses moving
    status = logic.run_in_process(params)
    result = logic.last["result"]
    assert result.settings["method"] == "dio" and result.settings["solver"]["transform"] == "svf"
    grid = slicer.util.arrayFromGridTransform(params.outputTransform)          # (k = 1, j, i, 3)
    np.testing.assert_allclose(grid[0], result.displacement_ras.reshape(grid.shape[2], grid.shape[1], 3)
                               .transpose(1, 0, 2), atol=1e-6)
    brain = _brain(fixed)
    fixed_data = nodes.volume_from_node(fixed).data
    before = correlation(nodes.volume_from_node(moving).data[brain], fixed_data[brain])
    after = correlation(nodes.volume_from_node(out).data[brain], fixed_data[brain])
    assert after > 0.95 > before, (before, after)
    # the content moved by +12 mm along i, so fixed points map 12 mm further along the image's i axis
    along_i = result.displacement_ras.reshape(brain.shape + (3,))[brain] @ fixed_axis(fixed)
    assert abs(np.median(along_i) - 2.0 * SHIFT_VOXELS) < 1.0, np.median(along_i)
    assert result.folding_fraction == 0.0 and "folding" in status


def fixed_axis(node) -> np.ndarray:
    m = nodes.ijk_to_ras(node)[:3, 0]
    return m / np.linalg.norm(m)


def test_carl_through_the_cli_needs_no_prealignment(pair, tmp_path):
    mini, fixed, moving = pair
    logic = RegistrationLogic(mini.scene, volumes_logic=mini.volumes_logic, temp_root=tmp_path, keep_temp=True)
    params = RegistrationParams(fixedVolume=fixed, movingVolume=moving, method="carl", device="cpu",
                                registrationModel="carl_2d", applyToMoving=False)
    arguments = logic.cli_arguments(params, ["f.nii", "m.nii"], tmp_path / "out")
    assert arguments[arguments.index("--method") + 1] == "carl" and arguments[-2:] == ["--model", "carl_2d"]
    runner = logic.start_background(params)
    assert runner.wait(timeout=300, interval=0.1) == "succeeded", logic.last.get("log")
    assert "--prealign" not in arguments  # nothing pre-aligns the pair (carl's default): the network finds the shift
    field = slicer.util.arrayFromGridTransform(params.outputTransform)[0].transpose(1, 0, 2)
    along_i = field[_brain(fixed)[..., 0]] @ fixed_axis(fixed)
    assert abs(np.median(along_i) - 2.0 * SHIFT_VOXELS) < 3.0, np.median(along_i)
