"""Model weights as safetensors + a JSON model card; training checkpoints as safetensors too (never pickles).

A model `NAME.safetensors` sits beside its card `NAME.json`:
  architecture + kwargs (how to rebuild it, via a small registry), weights file name and its sha256,
  n_parameters, training (data sets with licences, iterations, device, time), validation metrics,
  input_domain (modality, skull, spacing, shape, orientation, intensity normalisation) and `converged`
  (a plain statement). Loading verifies the sha256 and refuses a mismatch with an InputError.

Checkpoints (`save_checkpoint` / `load_checkpoint`) hold the model state, the optimizer's tensor state
(Adam moments and steps), RNG states and any extra tensors in ONE safetensors file; the optimizer's
param_groups and the caller's JSON-able metadata go into the safetensors header metadata.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import InputError

CARD_FORMAT = "toporeg-model-card/1"
_ARCHITECTURES: dict[str, Callable[..., torch.nn.Module]] = {}
_BUILTINS_LOADED = False


def register_architecture(name: str, factory: Callable[..., torch.nn.Module]) -> None:
    _ARCHITECTURES[name] = factory


def _builtin_architectures() -> None:
    """Register TopoReg's own architectures on first use (lazy: avoids import cycles with the model modules);
    user registrations made earlier are kept."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from .deepsim import DeepSimExtractor
    from .voxelmorph_diff import VoxelMorphDiff
    register_architecture("VoxelMorphDiff", VoxelMorphDiff)
    register_architecture("DeepSimExtractor", DeepSimExtractor)
    from ..topology.cvae import TopologyCVAE
    register_architecture("TopologyCVAE", TopologyCVAE)
    from ..segmentation.models import DeepEnsemble, MCDropoutUNet, PlainUNet, ProbabilisticUNet
    for seg in (PlainUNet, DeepEnsemble, MCDropoutUNet, ProbabilisticUNet):
        register_architecture(seg.__name__, seg)
    from ..neuralizer.model import Neuralizer
    register_architecture("Neuralizer", Neuralizer)
    from ..carl.model import CARL
    register_architecture("CARL", CARL)
    from ..dio.features import DIOFeatureNet
    register_architecture("DIOFeatureNet", DIOFeatureNet)


def build_model(architecture: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    _builtin_architectures()
    if architecture not in _ARCHITECTURES:
        raise InputError(f"unknown model architecture '{architecture}' (known: {', '.join(sorted(_ARCHITECTURES))})")
    if "backbone" in kwargs:
        raise InputError(f"this card's model uses a custom backbone ({kwargs['backbone']}); build it in code "
                         "and load the weights with load_state_dict")
    return _ARCHITECTURES[architecture](**kwargs)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; shipped weights should be readable like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) for either file of the pair."""
    path = Path(path)
    if path.suffix == ".json":
        card = path
        try:
            weights = card.parent / json.loads(card.read_text(encoding="utf-8"))["weights"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"not a readable TopoReg model card ({exc})", card) from None
        return weights, card
    return path, path.with_suffix(".json")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(model: torch.nn.Module, path: str | Path, card: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write NAME.safetensors + NAME.json; `card` adds training/validation/input_domain/converged fields."""
    weights, card_path = _paths(Path(path).with_suffix(".safetensors"))
    architecture = getattr(model, "architecture", type(model).__name__)
    _atomic_write(weights, lambda p: save_file(_state(model), str(p), metadata={"architecture": architecture,
                                                                               "format": CARD_FORMAT}))
    full = {
        "format": CARD_FORMAT,
        "name": weights.stem,
        "architecture": architecture,
        "kwargs": dict(getattr(model, "config", {})),
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(card or {}),
    }
    _atomic_write(card_path, lambda p: p.write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8"))
    return weights, card_path


def read_card(path: str | Path) -> dict[str, Any]:
    _, card = _paths(path)
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("model card (.json beside the weights) is missing", card) from None
    except ValueError as exc:
        raise InputError(f"model card is not valid JSON ({exc})", card) from None


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               strict: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from its card, check the weights' sha256 and load them (eval mode)."""
    weights, card_path = _paths(path)
    card = read_card(card_path)
    if not weights.exists():
        raise InputError("model weights file is missing", weights)
    digest = sha256_file(weights)
    if digest != card.get("sha256"):
        raise InputError(f"weights do not match their model card (sha256 {digest[:12]}… ≠ "
                         f"{str(card.get('sha256'))[:12]}…): refusing a modified or corrupted file", weights)
    model = build_model(card["architecture"], card.get("kwargs", {}))
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"), strict=strict)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the card's architecture: {str(exc).splitlines()[0]}", weights) from None
    return model.to(device).eval(), card


# --- training checkpoints ---------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    meta: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Model + optimizer tensor state + extra tensors in one safetensors file; JSON metadata in its header."""
    path = Path(path)
    out = {f"model.{k}": v for k, v in _state(model).items()}
    opt_meta: dict[str, Any] = {}
    if optimizer is not None:
        sd = optimizer.state_dict()
        opt_meta["param_groups"] = sd["param_groups"]
        scalars: dict[str, dict[str, Any]] = {}
        for pid, state in sd["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        opt_meta["scalars"] = scalars
    for k, v in (tensors or {}).items():
        out[f"extra.{k}"] = v.detach().cpu().contiguous()
    header = {"format": "toporeg-checkpoint/1", "meta": json.dumps(meta or {}, default=str),
              "optimizer": json.dumps(opt_meta, default=str)}
    _atomic_write(path, lambda p: save_file(out, str(p), metadata=header))
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model (and optimizer) in place; returns (meta, extra tensors)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if header.get("format") != "toporeg-checkpoint/1":
        raise InputError("not a TopoReg training checkpoint", path)
    data = load_file(str(path), device="cpu")
    model.load_state_dict({k[6:]: v for k, v in data.items() if k.startswith("model.")})
    opt_meta = json.loads(header.get("optimizer", "{}"))
    if optimizer is not None and opt_meta:
        state: dict[int, dict[str, Any]] = {}
        for key, value in data.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for pid, scalars in opt_meta.get("scalars", {}).items():
            state.setdefault(int(pid), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    extra = {k[6:]: v for k, v in data.items() if k.startswith("extra.")}
    return json.loads(header.get("meta", "{}")), extra
