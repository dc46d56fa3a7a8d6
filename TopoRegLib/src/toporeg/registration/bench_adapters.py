"""TopoReg's presets as benchmark methods: (fixed, moving) -> PeerResult, timed like every peer."""

from __future__ import annotations

from typing import Callable

from ..io import Volume
from .engine import register
from .settings import preset


def _method(preset_name: str, **overrides) -> Callable:
    def run(fixed: Volume, moving: Volume):
        from ..bench.peers import Measure, PeerResult  # the bench package imports this module lazily

        settings = preset(preset_name, **overrides)
        with Measure() as measure:
            result = register(fixed, moving, settings)
        note = f"preset {preset_name} {overrides or ''} on {result.device}".strip()
        return PeerResult(u_ras=result.displacement_ras, seconds=measure.seconds, peak_rss_mb=measure.peak_mb,
                          notes=note, warped=result.warped)
    return run


def toporeg_methods() -> dict[str, Callable]:
    return {
        "toporeg fast": _method("fast"),
        "toporeg default": _method("default"),
        "toporeg accurate": _method("accurate"),
        "toporeg affine": _method("default", transform="affine"),
    }
