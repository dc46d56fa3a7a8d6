"""Coordinate attention: for every query voxel, the softmax(⟨q, k⟩)-weighted mean of the key voxels' coordinates.

This is CARL's Ξ core (seed B.2): the values of a single-head attention are coordinates, so each fixed-image
voxel gets the centre of mass of its attention mask over the moving image. The logit scale is 1 because the
features arrive normalised to norm 4 (logits in [−16, 16]); the usual 1/√C would flatten the softmax and pull
every centre of mass towards the middle of the domain (seed B.9.1).

Memory: naive attention holds N_q × N_k logits (tens of GB at 3D). The fused path is PyTorch's SDPA limited to
its flash / memory-efficient / cuDNN kernels (never the O(N²) math path): flash exists on the CPU too (about
5× faster than the chunked loop at 3D) and needs values as wide as the features, so the coordinates are
zero-padded to C channels. Where no fused kernel accepts the inputs (older PyTorch, odd widths), queries are
processed `chunk` rows at a time, each chunk recomputed in the backward pass (activation checkpointing), so
both passes stay O(chunk × N_k). Always float32: coordinates in bf16 would be off by a quarter voxel at 40.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def coordinate_attention(query: torch.Tensor, key: torch.Tensor, key_coords: torch.Tensor, *,
                         chunk: int = 4096, fused: bool = True) -> torch.Tensor:
    """(B, ndim, *Sq): Σ_j softmax_j(⟨q_i, k_j⟩) · key_coords_j for query (B, C, *Sq), key (B, C, *Sk) and
    key_coords (B or 1, ndim, *Sk). Differentiable with respect to query and key. `fused=False` forces the
    chunked path (the reference the fused kernels are tested against)."""
    if query.shape[:2] != key.shape[:2]:
        raise ValueError(f"query {tuple(query.shape[:2])} and key {tuple(key.shape[:2])} differ in batch/channels")
    if key_coords.shape[2:] != key.shape[2:]:
        raise ValueError(f"key_coords grid {tuple(key_coords.shape[2:])} != key grid {tuple(key.shape[2:])}")
    batch, ndim, out_shape = query.shape[0], key_coords.shape[1], query.shape[2:]
    with torch.autocast(query.device.type, enabled=False):
        q = query.float().flatten(2).transpose(1, 2)                     # (B, Nq, C)
        k = key.float().flatten(2).transpose(1, 2)                       # (B, Nk, C)
        v = key_coords.float().flatten(2).transpose(1, 2).expand(batch, -1, -1)  # (B, Nk, ndim)
        out = _fused(q, k, v) if fused else None
        if out is None:
            out = _chunked(q, k, v, chunk)
    return out.transpose(1, 2).reshape(batch, ndim, *out_shape)


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """SDPA restricted to the flash/memory-efficient/cuDNN kernels; None when none of them accepts the inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ndim, width = v.shape[-1], q.shape[-1]
    if width < ndim:
        return None
    padded = F.pad(v, (0, width - ndim))[:, None].contiguous()
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    try:
        with warnings.catch_warnings(), sdpa_kernel(backends):
            warnings.simplefilter("ignore")  # "kernel not used because …" before the RuntimeError we handle
            out = F.scaled_dot_product_attention(q[:, None].contiguous(), k[:, None].contiguous(), padded,
                                                 scale=1.0)
    except RuntimeError:
        return None
    return out[:, 0, :, :ndim]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v


def _chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    recompute = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    parts = []
    for start in range(0, q.shape[1], chunk):
        qc = q[:, start:start + chunk]
        parts.append(checkpoint(_attend, qc, k, v, use_reentrant=False) if recompute and q.shape[1] > chunk
                     else _attend(qc, k, v))
    return torch.cat(parts, dim=1)
