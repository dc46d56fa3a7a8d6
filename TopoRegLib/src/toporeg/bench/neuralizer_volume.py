"""The 3D case of `toporeg bench neuralizer`: segment one AAL region of the held-out Colin27 volume from MNI152
(image, AAL) context pairs. Each context copy is placed in the world under its own small random rigid motion (a
header change only), so the inference's affine alignment has real work to do and the copies are not identical."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..io import Volume

VOLUME_LABEL = "Thalamus_L"


def _rigid(rng: np.random.Generator, degrees: float = 6.0, mm: float = 6.0) -> np.ndarray:
    a = np.radians(rng.uniform(-degrees, degrees, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(a[0]), -math.sin(a[0])], [0, math.sin(a[0]), math.cos(a[0])]])
    ry = np.array([[math.cos(a[1]), 0, math.sin(a[1])], [0, 1, 0], [-math.sin(a[1]), 0, math.cos(a[1])]])
    rz = np.array([[math.cos(a[2]), -math.sin(a[2]), 0], [math.sin(a[2]), math.cos(a[2]), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rx @ ry @ rz
    out[:3, 3] = rng.uniform(-mm, mm, 3)
    return out


def colin27_volume_case(cache: dict[str, Any], n_contexts: int, seed: int = 0
                        ) -> tuple[Volume, list[tuple[Volume, Volume]], Volume, int]:
    """(target, contexts, reference labels, label value) on the cache's 2 mm grid."""
    affine = np.asarray(cache["grid_affine"], dtype=np.float64)
    names = cache["meta"]["protocols"]["aal"]["labels"]
    label = int(next(k for k, v in names.items() if v == VOLUME_LABEL))
    rng = np.random.default_rng(seed)
    contexts = []
    for _ in range(n_contexts):
        moved = _rigid(rng) @ affine
        contexts.append((Volume(cache["mni152_image"].astype(np.float32), moved),
                         Volume(cache["mni152_aal"].astype(np.int16), moved, is_label=True)))
    target = Volume(cache["colin27_image"].astype(np.float32), affine)
    reference = Volume(cache["colin27_aal"].astype(np.int16), affine, is_label=True)
    return target, contexts, reference, label
