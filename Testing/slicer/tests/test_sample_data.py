"""The bundled sample data in Slicer's Sample Data module: sources from the manifest, registration at startup (through
a FAKE `SampleData` module), and loading into real MRML (label maps as label maps with the manifest's names)."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request

import numpy as np
import pytest
import slicer

from toporeg_slicer_testing import MODULE_DIR, SAMPLE_DATA
from TopoRegLogic import nodes, sample_data


@pytest.fixture
def fake_sample_data(monkeypatch):
    import fake_sample_data

    fake_sample_data.registered.clear()
    monkeypatch.setitem(sys.modules, "SampleData", fake_sample_data)
    return fake_sample_data


def test_sources_come_from_the_manifest():
    manifest = json.loads((SAMPLE_DATA / "manifest.json").read_text(encoding="utf-8"))
    sources = sample_data.sample_sources()
    assert [s.name for s in sources] == ["TopoReg MNI152", "TopoReg Colin27"]
    assert [[f.node_name for f in s.files] for s in sources] == [
        ["MNI152", "MNI152 brain mask", "MNI152 tissue"], ["Colin27", "Colin27 brain mask", "Colin27 AAL"]]
    listed = {e["name"]: e for e in manifest["files"]}
    assert sorted(f.path.name for s in sources for f in s.files) == sorted(listed)
    for source in sources:
        assert not source.missing() and "T1" in source.description
        for file in source.files:
            entry = listed[file.path.name]
            assert file.path.parent == SAMPLE_DATA and file.label == (entry["role"] != "image")
            assert file.labels == {int(k): v for k, v in entry.get("labels", {}).items()}
            assert hashlib.sha256(file.path.read_bytes()).hexdigest() == file.sha256   # SampleData checks it
    mni, colin = sources
    assert mni.files[2].labels == {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
    assert len(colin.files[2].labels) == 117 and colin.files[2].labels[77] == "Thalamus_L"


def test_registration_arguments_are_slicers(fake_sample_data):
    registered = sample_data.register_sample_data(fake_sample_data, thumbnail="icon.png")
    assert [s.name for s in registered] == [c["sampleName"] for c in fake_sample_data.registered]
    for source, call in zip(registered, fake_sample_data.registered):
        assert call["category"] == "TopoReg" and call["thumbnailFileName"] == "icon.png"
        assert call["uris"] == [f.path.as_uri() for f in source.files]
        assert all(uri.startswith("file://") for uri in call["uris"])             # no network
        assert call["fileNames"] == [f.path.name for f in source.files]
        assert call["nodeNames"] == [f.node_name for f in source.files]
        assert call["loadFileType"] == ["VolumeFile"] * 3
        assert call["checksums"] == [f"SHA256:{f.sha256}" for f in source.files]
        assert repr(call["customDownloader"]) == f"TopoRegSampleLoader({source.name!r})"  # stable: no duplicates
        with urllib.request.urlopen(call["uris"][0]) as stream:                 # what SampleData's download does
            assert hashlib.sha256(stream.read()).hexdigest() == call["checksums"][0].split(":")[1]


def test_the_module_registers_the_sources_once_slicer_has_started(mini_slicer, fake_sample_data):
    import TopoReg
    from fake_slicer_app import module_parent

    TopoReg.TopoReg(module_parent(MODULE_DIR / "TopoReg.py"))
    assert not fake_sample_data.registered                      # not before Slicer's startup is complete
    (slot,) = [slot for signal, slot in slicer.app.connections if signal == "startupCompleted()"]
    slot()
    calls = fake_sample_data.registered
    assert [c["sampleName"] for c in calls] == ["TopoReg MNI152", "TopoReg Colin27"]
    assert calls[0]["thumbnailFileName"] == str(MODULE_DIR / "Resources" / "Icons" / "TopoReg.png")


def test_the_sample_button_loads_label_maps_with_their_names(mini_slicer, fake_sample_data):
    sample_data.register_sample_data(fake_sample_data)
    colin = fake_sample_data.registered[1]
    image, mask, aal = colin["customDownloader"](object())     # SampleData passes its source object
    assert [n.GetName() for n in (image, mask, aal)] == colin["nodeNames"]
    assert image.IsA("vtkMRMLScalarVolumeNode") and not image.IsA("vtkMRMLLabelMapVolumeNode")
    assert mask.IsA("vtkMRMLLabelMapVolumeNode") and aal.IsA("vtkMRMLLabelMapVolumeNode")
    assert all(n.GetStorageNode() is None for n in (image, mask, aal))   # saving the scene writes copies
    np.testing.assert_allclose(nodes.ijk_to_ras(aal), nodes.ijk_to_ras(image), atol=1e-4)
    assert set(np.unique(slicer.util.arrayFromVolume(mask))) == {0, 1}
    colors = aal.GetDisplayNode().GetColorNode()
    assert colors.GetName() == "Colin27 AAL labels" and colors.GetColorName(77) == "Thalamus_L"
    rgba = [0.0] * 4
    colors.GetColor(0, rgba)
    assert rgba[3] == 0.0                                       # background transparent
    assert mask.GetDisplayNode().GetColorNode().GetColorName(1) == "brain"
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):   # shown in every slice view
        assert (composite.GetBackgroundVolumeID(), composite.GetLabelVolumeID()) == (image.GetID(), aal.GetID())


def test_load_sample_pair_is_the_registration_pair(mini_slicer):
    fixed, moving, labels = sample_data.load_sample_pair(mini_slicer.scene, with_labels=True)
    assert (fixed.GetName(), moving.GetName(), labels.GetName()) == ("MNI152", "Colin27", "Colin27 AAL")
    assert fixed.GetImageData().GetDimensions() == (99, 117, 95)
    assert moving.GetImageData().GetDimensions() == labels.GetImageData().GetDimensions() == (91, 109, 91)
    assert labels.IsA("vtkMRMLLabelMapVolumeNode") and not moving.IsA("vtkMRMLLabelMapVolumeNode")
    assert len(sample_data.load_sample_pair(mini_slicer.scene)) == 2
    with pytest.raises(ValueError, match="no TopoReg sample data"):
        sample_data.find_source("nonexistent")
