"""Every bundled model (Resources/Models) loads with its checksum and produces finite outputs on the sample data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toporeg.data.resources import sample_path
from toporeg.io import Volume, load_volume
from toporeg.models.catalogue import list_models, resolve_model
from toporeg.models.weights import load_model

BUNDLED = [m for m in list_models() if m["source"] == "bundled"]


def _axial_slice(name: str, k: int = 45) -> Volume:
    vol = load_volume(sample_path(name))
    data = np.asarray(vol.data, np.float32)[:, :, k]
    return Volume(data, vol.affine)


@pytest.mark.parametrize("entry", BUNDLED, ids=[m["name"] for m in BUNDLED])
def test_bundled_model_card_and_checksum(entry):
    model, card = load_model(entry["path"])
    for key in ("architecture", "sha256", "training", "validation", "input_domain", "converged"):
        assert key in card, key
    assert card["training"]["iterations"] > 0
    assert resolve_model(entry["name"]) == resolve_model(entry["path"])


def test_bundled_2d_registration_model_gives_a_finite_field():
    if not any(m["name"] == "vxm_diff_2d" for m in BUNDLED):
        pytest.skip("vxm_diff_2d is not bundled")
    from toporeg.models.inference import learned_register
    fixed, moving = _axial_slice("mni152_t1_2mm.nii.gz"), _axial_slice("colin27_t1_2mm.nii.gz")
    result = learned_register(fixed, moving, resolve_model("vxm_diff_2d"), device="cpu")
    assert result.displacement_ras.shape[:2] == fixed.grid_shape
    assert np.isfinite(result.displacement_ras).all()
    assert result.uncertainty is not None and np.isfinite(np.asarray(result.uncertainty.data)).all()


def test_bundled_3d_registration_model_gives_a_finite_field():
    if not any(m["name"] == "vxm_diff_3d_2mm" for m in BUNDLED):
        pytest.skip("vxm_diff_3d_2mm is not bundled")
    from toporeg.models.inference import learned_register
    fixed = load_volume(sample_path("mni152_t1_2mm.nii.gz"))
    moving = load_volume(sample_path("colin27_t1_2mm.nii.gz"))
    mask = load_volume(sample_path("colin27_brainmask_2mm.nii.gz"))
    result = learned_register(fixed, moving, resolve_model("vxm_diff_3d_2mm"), moving_mask=mask, device="cpu")
    assert np.isfinite(result.displacement_ras).all() and result.folding_fraction < 0.01


def test_bundled_deepsim_2d_features_at_full_resolution():
    if not any(m["name"] == "deepsim_seg_2d" for m in BUNDLED):
        pytest.skip("deepsim_seg_2d is not bundled")
    from toporeg.topology.features import SemanticFeatures
    features = SemanticFeatures.from_file(resolve_model("deepsim_seg_2d"))
    image = torch.rand(1, 1, 45, 53)
    out = features(image)
    assert out.shape[2:] == image.shape[2:] and torch.isfinite(out).all()
    assert out.shape[1] == sum(features.extractor.config["channels"][:3])


@pytest.mark.parametrize("ndim", [2, 3])
def test_bundled_topology_models_score_the_sample_pair(ndim):
    models = [m for m in BUNDLED if m.get("task") == "topology" and m.get("ndim") == ndim]
    if not models:
        pytest.skip(f"no bundled {ndim}D topology model")
    from toporeg.topology import TopologySettings, topology_heatmap
    if ndim == 2:
        fixed, moving = _axial_slice("mni152_t1_2mm.nii.gz"), _axial_slice("colin27_t1_2mm.nii.gz")
    else:
        fixed, moving = load_volume(sample_path("mni152_t1_2mm.nii.gz")), load_volume(sample_path("colin27_t1_2mm.nii.gz"))
    for entry in models:
        result = topology_heatmap(fixed, moving, TopologySettings(method="learned", model=entry["path"],
                                                                  preset="fast"), device="cpu")
        heat = np.asarray(result.heatmap.data)
        assert heat.shape == fixed.grid_shape and np.isfinite(heat).all()


def test_bundled_segmentation_models_segment_the_held_out_head():
    """Colin27 (whole head, never seen in training): the brain model finds its brain, the tissue model orders the
    classes by T1 brightness inside it, and the entropy map is higher on tissue boundaries than inside tissue."""
    from toporeg.segmentation import segment
    head = load_volume(sample_path("colin27_t1_2mm.nii.gz"))
    mask = np.asarray(load_volume(sample_path("colin27_brainmask_2mm.nii.gz")).data) > 0
    brain = segment(head, load_model(resolve_model("seg_brain_unet"))[0], samples=1)
    pred = np.asarray(brain.labels.data) == 1
    assert (pred & mask).sum() / mask.sum() > 0.95                      # finds the brain (measured 1.00)
    assert 2 * (pred & mask).sum() / (pred.sum() + mask.sum()) > 0.8    # measured 0.83: spills below the skull base
    tissue = segment(head, load_model(resolve_model("seg_tissue_unet"))[0], samples=1)
    labels, t1 = np.asarray(tissue.labels.data), np.asarray(head.data, np.float32)
    means = [t1[mask & (labels == c)].mean() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]                      # CSF < GM < WM on T1
    ent = np.asarray(tissue.entropy.data)
    edge = np.zeros_like(mask)
    for axis in range(3):
        edge |= np.diff(labels, axis=axis, prepend=labels.take([0], axis=axis)) != 0
    inside = mask & ~edge & (labels > 0)
    assert ent[mask & edge].mean() > 2 * ent[inside].mean()
