"""JSON round trip for the settings dataclasses (augmentation, synthesis, task configs): one definition."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

T = TypeVar("T", bound="DictConfig")


class DictConfig:
    """Mixin for a dataclass of settings: `from_dict` (JSON lists become the tuples the fields hold; None or {}
    gives the defaults; unknown keys are refused by the constructor) and `to_dict`."""

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(d or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
