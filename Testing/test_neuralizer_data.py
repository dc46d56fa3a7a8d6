"""Neuralizer data (issue #7): the cache builder, training episodes, benchmark episodes, hold-outs, seeds.

Most tests run on a tiny synthetic cache (ellipsoid brains, fake 1 mm atlases with their own, x-flipped affine)
built here by the real builder; one test checks the real mricron atlases land on the real templates."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from toporeg.neuralizer.data import NeuralizerData
from toporeg.neuralizer.data_cache import (ATLASES, MRICRON_DIR, atlas_on_grid, build_neuralizer_cache,
                                           inside_fraction, label_names, load_neuralizer_cache)
from toporeg.neuralizer.tasks import HELD_OUT_PROTOCOLS, HELD_OUT_TASKS, TASKS
from toporeg.segmentation.data_cache import geometric_head, signed_distance
from toporeg.training.templates import percentile_normalise_torch

SHAPE = (36, 44, 36)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-35.0, -43.0, -35.0)


def ras_grid(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def octant(ras: np.ndarray) -> np.ndarray:
    """Fake atlas: 8 labels by the sign of x, y, z (left/right, front/back, up/down)."""
    return (1 + (ras[..., 0] > 0) + 2 * (ras[..., 1] > 0) + 4 * (ras[..., 2] > 0)).astype(np.uint8)


def fake_subject(shift: float) -> dict[str, np.ndarray]:
    ras = ras_grid(SHAPE, AFFINE)
    r = atlas_radius(ras - np.array([shift, 0.0, 0.0]))
    tissue = np.select([r < 0.55, r < 0.85, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
    image = np.select([tissue == 3, tissue == 2, tissue == 1], [0.85, 0.55, 0.15], 0.0).astype(np.float32)
    image += 0.05 * np.sin(ras[..., 0] / 3) * (tissue > 0)
    return {"image": np.clip(image, 0, 1), "tissue": tissue, "mask": (tissue > 0).astype(np.uint8)}


def atlas_radius(ras: np.ndarray) -> np.ndarray:
    return np.sqrt((ras[..., 0] / 26) ** 2 + (ras[..., 1] / 32) ** 2 + (ras[..., 2] / 24) ** 2)


def write_atlas(folder: Path, name: str, offset=(0.0, 0.0, 0.0)) -> None:
    """A 1 mm octant atlas over MNI152's fake brain, on a grid whose x axis runs right → left (like jhu189)."""
    shape = (80, 96, 80)
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = (39.5 + offset[0], -47.5 + offset[1], -39.5 + offset[2])
    ras = ras_grid(shape, aff) - np.asarray(offset)
    inside = atlas_radius(ras) < 1.0
    nib.Nifti1Image((octant(ras) * inside).astype(np.uint8), aff).to_filename(str(folder / f"{name}.nii.gz"))
    (folder / f"{name}.nii.txt").write_text("\n".join(f"{i} {name}_region_{i} {1000 + i}" for i in range(1, 9)))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("neuralizer")
    template, seg = {"grid_affine": AFFINE, "meta": {}}, {"meta": {}}
    for name, shift in (("mni152", 0.0), ("colin27", 2.0)):
        sub = fake_subject(shift)
        template.update({f"{name}_{k}": v for k, v in sub.items()})
        brain = sub["mask"] > 0
        seg[f"{name}_brain_dist"] = np.clip(signed_distance(brain), 0, None)
        seg[f"{name}_head_dist"] = signed_distance(geometric_head(brain, margin_mm=8.0))
    head = template["colin27_image"] + 0.4 * (seg["colin27_head_dist"] < 0) * (template["colin27_mask"] == 0)
    seg["colin27_head_image"] = head.astype(np.float32)
    atlases = folder / "atlases"
    atlases.mkdir()
    for name in ("aal", "jhu", "brodmann"):
        write_atlas(atlases, name)
    spec = {name: (f"{name}.nii.gz", f"{name}.nii.txt", f"fake {name}") for name in ("aal", "jhu", "brodmann")}
    path = build_neuralizer_cache(folder / "n.npz", template_cache=template, seg_cache=seg, atlas_dir=atlases,
                                  atlases=spec, verbose=False)
    return {"path": path, "cache": load_neuralizer_cache(path), "template": template, "folder": folder,
            "spec": spec}


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def make(built, **kw) -> NeuralizerData:
    kw.setdefault("crop", 32)
    return NeuralizerData(built["cache"], **kw)


def test_cache_builder_puts_atlases_on_the_grid(built):
    cache, ras = built["cache"], ras_grid(SHAPE, AFFINE)
    meta = cache["meta"]
    assert list(meta["protocols"]) == ["tissue", "aal", "jhu", "brodmann"]
    for s in ("mni152", "colin27"):
        mask = cache[f"{s}_mask"] > 0
        for p in ("aal", "jhu", "brodmann"):
            lab = cache[f"{s}_{p}"]
            assert lab.dtype == np.uint16 and lab.shape == SHAPE
            assert np.all(lab[~mask] == 0)                                 # cut to the brain
            expected = octant(ras) * (atlas_radius(ras) < 1) * mask
            far = np.abs(atlas_radius(ras) - 1) > 0.1                      # off the atlas' edge
            assert np.array_equal(lab[far], expected[far])                 # right place, left/right not swapped
            assert meta["protocols"][p]["inside_brain_fraction"][s] > 0.9
        assert cache[f"{s}_brain_dist"].dtype == np.float32 and np.all(cache[f"{s}_brain_dist"][mask] == 0)
    info = meta["protocols"]["aal"]
    assert info["labels"]["3"] == "aal_region_3" and len(info["sha256"]) == 64 and "BSD-3" in info["licence"]
    assert {"aal.nii.gz", "aal.nii.txt"} <= {src["name"] for src in meta["sources"]}
    assert "colin27_head_image" in cache and "mni152_head_image" not in cache


def test_cache_builder_refuses_an_atlas_off_the_brain(built, tmp_path):
    write_atlas(tmp_path, "aal", offset=(0.0, 60.0, 0.0))                     # 6 cm anterior: off the brain
    spec = {"aal": ("aal.nii.gz", None, "shifted")}
    with pytest.raises(ValueError, match="does not land"):
        build_neuralizer_cache(tmp_path / "x.npz", template_cache=built["template"],
                               seg_cache=dict(built["cache"]), atlas_dir=tmp_path, atlases=spec, verbose=False)


@pytest.mark.skipif(not (MRICRON_DIR / "aal.nii.gz").exists(), reason="Debian mricron-data not installed")
def test_real_mricron_atlases_land_on_both_templates(tmp_path):
    from toporeg.training.dataset_cache import build_cache, load_cache
    cache = load_cache(build_cache(tmp_path / "templates.npz"))
    shape = cache["mni152_mask"].shape
    x_mm = ras_grid(shape, cache["grid_affine"])[..., 0]
    for name, (file, names_file, _) in ATLASES.items():
        labels = atlas_on_grid(MRICRON_DIR / file, cache["grid_affine"], shape)
        for s in ("mni152", "colin27"):
            assert inside_fraction(labels, cache[f"{s}_mask"] > 0) > 0.9, (name, s)
        assert len(np.unique(labels)) > 30
        names = label_names(MRICRON_DIR / names_file if names_file else None, name, np.unique(labels))
        sided = {int(k): v[-1] for k, v in names.items() if v[-2:] in ("_L", "_R")}
        for k, side in sided.items():                      # left-hemisphere labels at x < 0 (RAS), right at x > 0
            assert (x_mm[labels == k].mean() < 0) == (side == "L"), (name, names[str(k)])
        assert name not in ("aal", "jhu") or len(sided) > 40


def test_episode_shapes_ranges_and_kinds(built):
    d = make(built, seed=1)
    e = d.episode(3, 4)
    assert e["target_in"].shape == (3, 3, 32, 32) and e["target_out"].shape == (3, 1, 32, 32)
    assert e["context_in"].shape == (3, 4, 3, 32, 32) and e["context_out"].shape == (3, 4, 1, 32, 32)
    for _ in range(4):
        e = d.episode(4, 3)
        for k in ("target_in", "target_out", "context_in", "context_out"):
            assert e[k].dtype == torch.float32 and e[k].min() >= 0 and e[k].max() <= 1 and torch.isfinite(e[k]).all()
        assert e["is_segment"].dtype == torch.bool
        assert e["is_segment"].tolist() == [TASKS[t].kind == "segment" for t in e["task"]]
        assert e["target_in"].flatten(1).amax(1).min() > 0                 # every target has an image
        for b in range(4):
            if e["is_segment"][b]:
                out = torch.cat([e["target_out"][b], e["context_out"][b].flatten(0, 1)])
                assert set(out.unique().tolist()) <= {0.0, 1.0}
                assert 0 < e["target_out"][b].sum() < e["target_out"][b].numel()   # non-empty, not everything
    assert make(built, crop=None, planes=("coronal",)).episode(1, 2)["target_in"].shape == (1, 3, 36, 36)


def test_held_out_tasks_and_protocols_never_train(built):
    d = make(built, seed=2)
    assert "bias_removal" not in d.tasks and "brodmann" not in d.protocols
    tasks, protocols = set(), set()
    for _ in range(25):
        e = d.episode(4, 1)
        tasks |= set(e["task"])
        protocols |= {i["protocol"] for i in e["info"] if i["task"] == "segment"}
    assert not tasks & set(HELD_OUT_TASKS) and not protocols & set(HELD_OUT_PROTOCOLS)
    assert len(tasks) >= 5 and protocols >= {"tissue", "aal"}
    every = make(built, seed=2, tasks=["segment", "bias_removal"], protocols=["brodmann"])
    seen = [(i["task"], i.get("protocol")) for _ in range(4) for i in every.episode(4, 1)["info"]]
    assert ("bias_removal", None) in seen and ("segment", "brodmann") in seen
    with pytest.raises(ValueError):
        make(built, tasks=["teleport"])


def test_same_seed_same_episodes_and_state_resumes(built):
    a, b = make(built, seed=7), make(built, seed=7)
    for _ in range(2):
        ea, eb = a.episode(2, 3), b.episode(2, 3)
        assert ea["task"] == eb["task"] and torch.equal(ea["context_in"], eb["context_in"])
        assert torch.equal(ea["target_out"], eb["target_out"])
    other = [make(built, seed=s).episode(2, 3)["target_in"] for s in (8, 9)]
    assert not torch.equal(*other)
    state = a.state()
    first = a.episode(2, 3)
    a.episode(1, 2)
    a.set_state(state)
    again = a.episode(2, 3)
    assert first["task"] == again["task"] and torch.equal(first["target_in"], again["target_in"])
    assert first["info"] == again["info"]


def test_fixed_segment_episode_targets_colin27_as_it_is(built):
    cache = built["cache"]
    d = make(built)
    state = d.state()
    e = d.fixed_episode("segment", protocol="brodmann", labels=[2, 6], n_context=3, slice_index=18, seed=4)
    assert torch.equal(d.state(), state)                                    # the training stream is untouched
    assert e["target_in"].shape == (1, 3, 36, 44) and e["context_out"].shape == (1, 3, 1, 36, 44)
    lab = torch.as_tensor(cache["colin27_brodmann"][:, :, 18].astype(np.int64))
    assert torch.equal(e["target_out"][0, 0], torch.isin(lab, torch.tensor([2, 6])).float())
    img = torch.as_tensor(cache["colin27_image"][:, :, 18] * cache["colin27_mask"][:, :, 18])[None, None]
    assert torch.allclose(e["target_in"][0, 0], percentile_normalise_torch(img / img.max())[0, 0], atol=1e-5)
    assert torch.all(e["target_in"][0, 1:] == 0) and e["is_segment"].tolist() == [True]
    info = e["info"][0]
    assert info["subjects"] == ["colin27", "mni152", "mni152", "mni152"] and info["augmentations"] == []
    assert all(e["context_out"][0, i].sum() > 0 for i in range(3))          # mni152 has the labels there too
    again = d.fixed_episode("segment", protocol="brodmann", labels=[2, 6], n_context=3, slice_index=18, seed=4)
    assert torch.equal(again["context_in"], e["context_in"])
    auto = d.fixed_episode("segment", protocol="jhu", n_context=2, plane="sagittal", seed=1)
    assert auto["info"][0]["protocol"] == "jhu" and 1 <= len(auto["info"][0]["labels"]) <= 3
    assert auto["target_out"].sum() > 0


def test_fixed_skull_strip_and_image_episodes(built):
    cache, d = built["cache"], make(built)
    e = d.fixed_episode("skull_strip", n_context=2, slice_index=10, seed=0)
    assert torch.equal(e["target_out"][0, 0], torch.as_tensor(cache["colin27_mask"][:, :, 10] > 0).float())
    head = torch.as_tensor(cache["colin27_head_image"][:, :, 10])
    outside = (head > 0) & (e["target_out"][0, 0] == 0)
    assert outside.any() and torch.all(e["target_in"][0, 0][outside] > 0)   # the real head: skull and scalp
    n = d.fixed_episode("denoise", n_context=2, slice_index=18, seed=0, sigma=0.15, rician=False)
    assert n["is_segment"].tolist() == [False] and n["info"][0]["sigma"] == 0.15
    assert (n["target_in"][0, 0] - n["target_out"][0, 0]).abs().mean() > 0.03
    with pytest.raises(ValueError):
        d.fixed_episode("denoise", protocol="aal")


def test_describe_is_json_and_names_sources(built):
    desc = make(built).describe()
    json.dumps(desc)
    assert desc["held_out_tasks"] == list(HELD_OUT_TASKS) and desc["held_out_protocols"] == ["brodmann"]
    assert desc["subjects"]["training"] == ["mni152"] and desc["protocols"]["aal"]["labels"] == 8
    assert any(s["name"] == "aal.nii.gz" for s in desc["sources"])
