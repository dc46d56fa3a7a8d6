"""`Volume` ↔ torch tensor (B=1, C, *grid) with the singleton slice of 2D images dropped and restored."""

from __future__ import annotations

import numpy as np
import torch

from ..io.volume import Volume


def volume_to_tensor(volume: Volume, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, C, *grid_shape) tensor of the voxels (C = channels, or 1)."""
    data = np.asarray(volume.data)
    if not volume.has_channels:
        data = data[..., None]
    data = data.reshape(volume.grid_shape + (data.shape[-1],))
    arr = np.moveaxis(data, -1, 0)[None]
    return torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype, device=device)


def pad_tensor_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Replicate-pad the spatial axes of (B, C, *S) at their ends to multiples of `factor` (what a U-Net with
    that many halvings needs); returns the padded tensor and the index that crops it back."""
    size = x.shape[2:]
    spec: list[int] = []
    for n in reversed(size):  # F.pad lists the last axis first
        spec += [0, (-n) % factor]
    padded = torch.nn.functional.pad(x, spec, mode="replicate") if any(spec) else x
    return padded, (slice(None), slice(None), *[slice(0, n) for n in size])


def tensor_to_volume(tensor: torch.Tensor, like: Volume, *, is_label: bool = False,
                     dtype: np.dtype | type | None = np.float32) -> Volume:
    """A volume on `like`'s grid from a (1, C, *grid) tensor; C > 1 becomes a channel axis."""
    arr = tensor.detach().cpu().numpy()[0]
    channels = arr.shape[0] > 1
    arr = np.moveaxis(arr, 0, -1) if channels else arr[0]
    arr = arr.reshape(like.spatial_shape + ((arr.shape[-1],) if channels else ()))
    if dtype is not None:
        arr = arr.astype(dtype)
    return Volume(arr, like.affine.copy(), has_channels=channels, is_label=is_label)
