"""Segmentation data (issue #6): label conventions, synthetic whole heads, simulated annotators, hold-out, seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from segmentation_fixtures import build_caches, build_harvard_oxford_cache

from toporeg.segmentation.annotators import AnnotatorConfig, annotator_masks
from toporeg.segmentation.data import SegmentationData, task_labels
from toporeg.segmentation.data_cache import load_seg_cache
from toporeg.segmentation.head_synthesis import EXTRA_CSF, MARROW, SKIN, SKULL, head_labels
from toporeg.segmentation.scoring import dilate
from toporeg.training.synth import RandomFields


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict:
    return build_caches(tmp_path_factory.mktemp("segcache"))


def data(caches, task: str, **kw) -> SegmentationData:
    return SegmentationData(task, cache=caches["cache"], seg_cache=caches["seg_data"], **kw)


def test_template_labels_follow_the_csf_convention(caches):
    """CSF = brain mask − GM − WM and 0 outside the brain, for both templates."""
    for name in ("mni152", "colin27"):
        tissue, mask = caches["cache"][f"{name}_tissue"], caches["cache"][f"{name}_mask"] > 0
        assert np.array_equal(tissue > 0, mask)
        assert np.array_equal(tissue == 1, mask & (tissue != 2) & (tissue != 3))
    assert task_labels("tissue") == {0: "background", 1: "CSF", 2: "GM", 3: "WM"}


def test_seg_cache_contents(caches):
    seg, cache = caches["seg_data"], caches["cache"]
    atlas = seg["meta"]["atlas"]
    assert atlas["name"] == "white matter" and atlas["permissive"] and "MNI/McGill" in atlas["licence"]
    assert "FSL" not in json.dumps(seg["meta"]) and "atlas_prob" not in seg  # no Harvard-Oxford by default
    for name in ("mni152", "colin27"):
        brain = cache[f"{name}_mask"] > 0
        assert np.all(seg[f"{name}_brain_dist"][brain] == 0) and seg[f"{name}_brain_dist"][~brain].min() >= 1.9
        assert np.all(seg[f"{name}_head_dist"][brain] < 0)  # the head contains the brain
    # Colin27's real head is much larger than its brain, and dark air surrounds it
    head = seg["colin27_head_dist"] < 0
    assert head.sum() > 2.0 * (cache["colin27_mask"] > 0).sum()
    assert seg["colin27_head_image"][~head].mean() < 0.05 < seg["colin27_head_image"][head].mean()
    for name in ("mni152", "colin27"):  # per template: each image's own white matter, fuzzy at its boundary
        prob, tissue = seg[f"{name}_atlas_prob"], cache[f"{name}_tissue"]
        assert 0.95 < prob.max() <= 1.0 and prob.min() == 0.0
        wm = prob > 0.5
        assert 2 * (wm & (tissue == 3)).sum() / (wm.sum() + (tissue == 3).sum()) > 0.75  # it is the WM
        assert wm.sum() > 0.2 * (tissue > 0).sum()                                       # large, not tiny
        assert ((prob > 0.25) & (prob < 0.75)).sum() > 0.3 * wm.sum()                    # a wide fuzzy zone


def test_harvard_oxford_is_explicit_and_refused_without_the_noncommercial_flag(caches, one_torch_thread):
    ho = load_seg_cache(build_harvard_oxford_cache(caches))
    assert ho["meta"]["atlas"]["name"] == "hippocampus" and "NON-COMMERCIAL" in ho["meta"]["atlas"]["licence"]
    assert not ho["meta"]["atlas"]["permissive"] and "atlas_prob" in ho
    with pytest.raises(ValueError, match="not permissively licensed"):
        SegmentationData("ambiguous", cache=caches["cache"], seg_cache=ho)
    d = SegmentationData("ambiguous", cache=caches["cache"], seg_cache=ho, seed=3,
                         data={"noncommercial_atlas": True, "structure_slices": 1.0, "outside_slices": 0.0})
    assert d.labels == {0: "background", 1: "hippocampus"} and d.sample(2)["annotators"].sum() > 0
    data(caches, "tissue")  # the other tasks never look at the atlas


@pytest.mark.parametrize("task", ["tissue", "brain"])
def test_targets_are_zero_outside_the_brain(caches, task, one_torch_thread):
    batch = data(caches, task, seed=1).sample(6)
    target, brain = batch["target"], batch["brain"]
    assert target.shape == (6, 96, 112) and target.dtype == torch.int64
    assert torch.all(target[~brain] == 0) and torch.all((target > 0) == brain if task == "tissue" else target == brain)
    assert set(torch.unique(target).tolist()) <= set(task_labels(task))
    assert 0.0 <= float(batch["image"].min()) <= float(batch["image"].max()) <= 1.0


def test_whole_head_images_have_tissue_outside_the_brain(caches, one_torch_thread):
    d = data(caches, "tissue", seed=2, data={"outside_slices": 0.0})
    for kw in ({"synthetic": True}, {"synthetic": False, "real_head": False}, {"synthetic": False, "real_head": True}):
        batch = d.sample(6, whole_head=True, **kw)
        outside = ~dilate(batch["brain"], 2)
        bright = (batch["image"][:, 0] > 0.1) & outside
        assert bright.float().mean() > 0.05, kw                # scalp, skull marrow, face: signal off the brain
        assert torch.all(batch["target"][outside] == 0)       # … which is background in the labels
    stripped = d.sample(6, whole_head=False)
    off = ~dilate(stripped["brain"], 3)
    assert ((stripped["image"][:, 0] > 0.1) & off).float().mean() < 0.01  # only blur/slab smear near the brain


def test_synthetic_skull_closes_around_the_brain(caches):
    """Shells in order: from brain or extra-cerebral CSF one voxel outwards only skull (or CSF/marrow) is met, so no
    path from the brain reaches the scalp or the air without crossing bone."""
    seg, cache = caches["seg_data"], caches["cache"]
    k = 60
    as_t = [torch.as_tensor(np.asarray(a)[None, None, :, :, k]) for a in (
        cache["mni152_tissue"].astype(np.int64), seg["mni152_brain_dist"], seg["mni152_head_dist"])]
    labels = head_labels(*as_t, RandomFields(3), voxel_mm=2.0)[:, 0]
    inner = (labels >= 1) & (labels <= EXTRA_CSF)
    ring = dilate(inner, 1) & ~inner
    assert ring.any() and bool(torch.all((labels[ring] == SKULL) | (labels[ring] == MARROW)))
    assert (labels == SKIN).any() and (labels == 0).any()
    assert torch.equal(labels[labels <= 3], as_t[0][:, 0][labels <= 3])  # brain voxels keep their tissue label


def test_annotators_differ_but_agree_in_the_core():
    x = torch.linspace(-1.0, 1.0, 64)
    r = torch.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    prob = ((0.8 - r) / 0.5).clamp(0, 1)[None, None]  # core p = 1 for r < 0.3, rim down to 0 at r = 0.8
    masks = annotator_masks(prob.expand(2, 1, 64, 64), RandomFields(0), AnnotatorConfig(n=4))
    assert masks.shape == (2, 4, 64, 64)
    assert torch.all(masks[:, :, (prob[0, 0] >= 0.95)] == 1) and torch.all(masks[:, :, prob[0, 0] == 0] == 0)
    sizes = masks.sum((2, 3)).float()
    assert torch.all(sizes[:, 0] > sizes[:, 3])  # annotator 0 is the most liberal, 3 the most conservative
    assert not torch.equal(masks[:, 1], masks[:, 2])


def test_ambiguous_task_yields_every_annotator(caches, one_torch_thread):
    d = data(caches, "ambiguous", seed=4, data={"outside_slices": 0.0, "structure_slices": 1.0,
                                                  "annotators": {"n": 5}, "ambiguous_crop": None})
    batch = d.sample(4)
    ann = batch["annotators"]
    assert ann.shape == (4, 5, 96, 112) and d.labels == {0: "background", 1: "white matter"}
    assert ann.sum() > 0 and not torch.all(ann == ann[:, :1])           # they disagree somewhere …
    agree = (ann == ann[:, :1]).all(1)
    assert agree.float().mean() > 0.8                                   # … but mostly agree
    assert torch.all(ann[~batch["brain"][:, None].expand_as(ann)] == 0)  # 0 outside the brain
    assert any(torch.equal(batch["target"][i], ann[i, j]) for i in range(4) for j in range(5))
    # training patches (default): 64 x 64 cut from the same draws, centred on the structure most of the time
    patches = data(caches, "ambiguous", seed=4, data={"outside_slices": 0.0, "structure_slices": 1.0,
                                                        "annotators": {"n": 5}, "crop_focus": 1.0}).sample(4)
    assert patches["image"].shape == (4, 1, 64, 64) and patches["annotators"].shape == (4, 5, 64, 64)
    for b, (i, j) in enumerate(patches["crop"]):  # the same draws as above, cut
        assert torch.equal(patches["annotators"][b], ann[b, :, i:i + 64, j:j + 64])
        assert torch.equal(patches["image"][b], batch["image"][b, :, i:i + 64, j:j + 64])
    assert patches["annotators"].float().mean() > ann.float().mean()   # the structure fills more of a patch


def test_hold_out_removes_the_whole_template(caches, one_torch_thread):
    d = data(caches, "tissue", seed=5, hold_out="colin27")
    assert d.templates == ["mni152"] and d.image.shape[0] == 1 and not bool(d.has_head.any())
    assert torch.equal(d.image[0, 0], torch.as_tensor(caches["cache"]["mni152_image"]))
    drawn = d.sample(16, whole_head=True, synthetic=False, real_head=True)
    assert set(drawn["template"]) == {"mni152"}
    both = data(caches, "tissue", seed=5)
    assert sorted(both.templates) == ["colin27", "mni152"] and "colin27" in set(both.sample(16)["template"])
    with pytest.raises(ValueError):
        data(caches, "tissue", hold_out="someone")


def test_draws_are_reproducible_with_a_seed(caches, one_torch_thread):
    a = data(caches, "ambiguous", seed=7).sample(3)
    b = data(caches, "ambiguous", seed=7).sample(3)
    c = data(caches, "ambiguous", seed=8).sample(3)
    for key in ("image", "target", "annotators"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])


def test_3d_draws(caches, one_torch_thread):
    batch = data(caches, "tissue", ndim=3, seed=9).sample(1, whole_head=True)
    assert batch["image"].shape == (1, 1, 96, 112, 96) and batch["slice"] is None
    assert torch.all(batch["target"][~batch["brain"]] == 0) and batch["target"].max() == 3
