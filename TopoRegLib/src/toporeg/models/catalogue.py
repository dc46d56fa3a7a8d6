"""The model catalogue: bundled models (Resources/Models) and the user's (TOPOREG_MODELS or
~/.cache/toporeg/models), found by name; `toporeg models` lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.resources import model_dirs
from ..errors import InputError
from .weights import read_card


def resolve_model(name_or_path: str | Path) -> Path:
    """A weights path from a bundled/user model name (e.g. 'vxm_diff_3d_2mm') or a path to a .safetensors file."""
    path = Path(name_or_path)
    if path.suffix in (".safetensors", ".json") or path.exists():
        if not path.with_suffix(".safetensors").exists():
            raise InputError("model weights file is missing", path.with_suffix(".safetensors"))
        return path.with_suffix(".safetensors")
    for folder in model_dirs():
        candidate = folder / f"{name_or_path}.safetensors"
        if candidate.exists():
            return candidate
    known = ", ".join(sorted(m["name"] for m in list_models())) or "none installed"
    raise InputError(f"unknown model '{name_or_path}' (known: {known}); give a name or a .safetensors path")


def list_models() -> list[dict[str, Any]]:
    """One summary per model found (bundled first): name, task, architecture, input spacing, card summary."""
    out, seen = [], set()
    for folder in model_dirs():
        source = "bundled" if folder.name == "Models" and folder.parent.name == "Resources" else "user"
        for weights in sorted(folder.glob("*.safetensors")):
            if weights.stem in seen:
                continue
            seen.add(weights.stem)
            try:
                card = read_card(weights)
            except InputError as exc:
                out.append({"name": weights.stem, "source": source, "path": str(weights), "error": str(exc)})
                continue
            dom = card.get("input_domain", {})
            out.append({"name": weights.stem, "source": source, "path": str(weights), "task": card.get("task"),
                        "architecture": card.get("architecture"), "ndim": dom.get("ndim"),
                        "spacing_mm": dom.get("spacing_mm"), "validation": card.get("validation", {}),
                        "converged": card.get("converged")})
    return out
