"""Shared pieces of the Uncertainty panel tests (logic and widget): the input node and a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toporeg_slicer_testing import SAMPLE_DATA, downsampled_node

LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
TIMEOUT = 300  # seconds for one background segmentation run on a loaded 2-core machine


def input_node(mini):
    """The bundled MNI152 T1 read through Slicer's storage node, every other voxel kept (4 mm, exact geometry)."""
    from TopoRegLogic import nodes

    full = nodes.load_volume_node(mini.scene, SAMPLE_DATA / "mni152_t1_2mm.nii.gz", "MNI152 2mm")
    node = downsampled_node(mini, full, 2, "MNI152")
    mini.scene.RemoveNode(full)
    return node


def train_tiny_tissue_model(folder: Path) -> Path:
    """A 2D MC-dropout U-Net trained for 40 steps (about 20 s on a loaded 2-core machine) on axial 4 mm slices of
    the sample T1 to label the brain's intensity terciles ("CSF" < "GM" < "WM", as on T1): a real, learnable task,
    confident away from the tercile boundaries, with sampled masks that differ near them."""
    from toporeg.geometry import percentile_normalize
    from toporeg.io import load_volume
    from toporeg.models.weights import save_model
    from toporeg.segmentation import MCDropoutUNet

    image = load_volume(SAMPLE_DATA / "mni152_t1_2mm.nii.gz")
    img = percentile_normalize(np.asarray(image.data, np.float32)[::2, ::2, ::2], 0.5, 99.5)
    brain = img > 0.15
    labels = np.where(brain, 1 + np.digitize(img, np.quantile(img[brain], [1 / 3, 2 / 3])), 0)
    pad = [(0, -n % 16) for n in img.shape[:2]] + [(0, 0)]
    x = torch.from_numpy(np.pad(img, pad)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.pad(labels, pad)).permute(2, 0, 1).long()
    torch.manual_seed(0)
    model = MCDropoutUNet(ndim=2, n_classes=4, channels=(16, 16, 16, 16), dropout=0.2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = torch.randint(len(x), (4,), generator=generator)
        loss, _ = model.training_loss(x[batch], y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    card = {"task": "tissue", "method": "mcdropout", "ndim": 2, "labels": {str(k): v for k, v in LABELS.items()},
            "input_domain": {"modality": "T1w", "skull": "stripped", "spacing_mm": [4.0, 4.0]}}
    weights, _ = save_model(model.eval(), Path(folder) / "tiny_seg_mcdropout", card=card)
    return weights
