"""TopoReg.py itself with the FAKE desktop modules: module metadata, the logic's parameter node, the self-test,
scene save/reload of the parameter node and the outputs, and the batch script."""

from __future__ import annotations

import numpy as np
import slicer

from toporeg_slicer_testing import (MODULE_DIR, SAMPLE_DATA, MiniSlicer, blobs, oblique_affine, save_scene,
                                    tiny_settings)
from toporeg.io import Volume, save_volume
from TopoRegLogic import nodes
from TopoRegLogic import transform_nodes as tn
from TopoRegLogic.params import params_from_parameter_node, write_parameter_node


def test_module_metadata(mini_slicer):  # the module connects to slicer.app (sample data at startup)
    import TopoReg
    from fake_slicer_app import module_parent

    parent = module_parent(MODULE_DIR / "TopoReg.py")
    module = TopoReg.TopoReg(parent)
    assert parent.title == "TopoReg" and parent.categories == ["Registration"]
    assert parent.contributors and "Research use only, not for clinical decisions" in parent.helpText
    assert parent.acknowledgementText
    assert module.resourcePath("UI/TopoReg.ui") == str(MODULE_DIR / "Resources" / "UI" / "TopoReg.ui")


def test_logic_parameter_node_is_a_singleton_with_defaults(mini_slicer):
    import TopoReg

    logic = TopoReg.TopoRegLogic()
    params = logic.getParameterNode()
    assert params.parameterNode is logic.getParameterNode().parameterNode
    assert params.parameterNode.GetSingletonTag() == "TopoReg"
    assert (params.method, params.preset, params.transformModel, params.similarity, params.device) == \
        ("optimize", "default", "svf", "lncc", "auto")
    assert params.applyToMoving and params.showJacobian and params.fixedVolume is None
    assert logic.inputProblem(params) == "select a fixed and a moving volume"


def test_self_test_runs_on_the_sample_data(mini_slicer):
    import TopoReg

    test = TopoReg.TopoRegTest()
    test.sampleStride = 4                       # Slicer runs it at full resolution (stride 1)
    test.runTest()
    transforms = slicer.util.getNodesByClass("vtkMRMLGridTransformNode")
    assert len(transforms) == 1 and transforms[0].GetName() == "Colin27 to MNI152 (TopoReg)"


def test_parameter_node_and_outputs_survive_scene_save_and_reload(mini_slicer, tmp_path):
    import TopoReg

    from TopoRegLogic.outputs import RegistrationOutputs

    scene, affine = mini_slicer.scene, oblique_affine()
    fixed = nodes.new_volume_node(scene, Volume(blobs((10, 12, 9), seed=1), affine), "fixed")
    moving = nodes.new_volume_node(scene, Volume(blobs((10, 12, 9), seed=2), affine), "moving")
    logic = TopoReg.TopoRegLogic()
    params = logic.getParameterNode()
    params.fixedVolume, params.movingVolume = fixed, moving
    params.preset, params.similarity, params.device, params.showJacobian = "accurate", "nmi", "cpu", False
    params.fixedMask = nodes.new_volume_node(scene, Volume(np.ones((10, 12, 9), np.uint8), affine, is_label=True), "m")
    u = np.random.default_rng(1).normal(size=(10, 12, 9, 3))
    logic.registration.apply_results(params, RegistrationOutputs(displacement_ras=u, fixed_affine=affine))
    assert params.outputTransform is not None
    folder = tmp_path / "saved"
    save_scene(mini_slicer, folder)

    reloaded = MiniSlicer(tmp_path / "second")            # a new application, as after restarting Slicer
    reloaded.scene.SetURL(str(folder / "scene.mrml"))
    assert reloaded.scene.Connect()
    node = TopoReg.TopoRegLogic().getParameterNode()
    assert node.parameterNode.GetID() == params.parameterNode.GetID()
    assert (node.preset, node.similarity, node.device, node.showJacobian, node.applyToMoving) == \
        ("accurate", "nmi", "cpu", False, True)
    assert node.fixedVolume.GetName() == "fixed" and node.movingVolume.GetName() == "moving"
    assert node.fixedMask.GetName() == "m" and node.fixedMask.IsA("vtkMRMLLabelMapVolumeNode") and not node.movingMask
    np.testing.assert_array_equal(nodes.volume_from_node(node.fixedVolume).data, blobs((10, 12, 9), seed=1))
    np.testing.assert_allclose(nodes.ijk_to_ras(node.fixedVolume), affine, atol=1e-9)
    np.testing.assert_allclose(tn.displacement_from_node(node.outputTransform), u, atol=1e-6)
    assert node.movingVolume.GetParentTransformNode() is node.outputTransform
    role = slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole()
    assert node.outputTransform.GetNodeReference(role) is node.fixedVolume
    plain = params_from_parameter_node(node.parameterNode)          # readable without the wrapper too
    assert plain.preset == "accurate" and plain.outputTransform is node.outputTransform


def test_plain_parameter_writer_matches_the_wrapper_storage(mini_slicer):
    import TopoReg

    scene = mini_slicer.scene
    params = TopoReg.TopoRegLogic().getParameterNode()
    params.fixedVolume = nodes.new_volume_node(scene, Volume(blobs((4, 4, 4)), np.eye(4)), "f")
    params.movingMask = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    params.preset = "fast"
    raw = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "raw")
    write_parameter_node(raw, params_from_parameter_node(params.parameterNode))
    wrapped = params.parameterNode
    assert set(raw.GetParameterNames()) == set(wrapped.GetParameterNames())
    for name in wrapped.GetParameterNames():
        assert raw.GetParameter(name) == wrapped.GetParameter(name), name
        assert raw.GetNodeReferenceID(name) == wrapped.GetNodeReferenceID(name), name
    assert raw.GetNodeReference("movingMask_1") is params.movingMask


def test_batch_script_registers_a_folder_of_pairs(mini_slicer, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch_register", MODULE_DIR / "Scripts" / "batch_register.py")
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    affine = oblique_affine()
    image = blobs((12, 12, 10), seed=4)
    case = tmp_path / "data" / "case01"
    save_volume(Volume(image, affine), case / "fixed.nii.gz")
    save_volume(Volume(np.roll(image, 1, axis=0), affine), case / "moving.nii.gz")
    (tmp_path / "data" / "broken").mkdir()
    pairs = batch.read_pairs(folder=tmp_path / "data")
    assert [p[0] for p in pairs] == ["broken", "case01"]
    failures = batch.run_batch(pairs, tmp_path / "results", settings=tiny_settings(), log=lambda *_: None)
    assert failures == 1
    for name in ("transform.h5", "warped.nii.gz", "jacobian.nii.gz"):
        assert (tmp_path / "results" / "case01" / name).is_file()
    summary = (tmp_path / "results" / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert summary[0] == "case,status,seconds,folding_percent"
    assert summary[1].startswith("broken,failed: ") and summary[2].startswith("case01,ok,")
    assert SAMPLE_DATA.is_dir()
