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
        **learned_methods(3),
    }


def _learned_method(model_path, refine: int) -> Callable:
    def run(fixed: Volume, moving: Volume):
        from ..bench.peers import Measure, PeerResult
        from ..models.inference import learned_register

        with Measure() as measure:
            result = learned_register(fixed, moving, model_path, refine_iterations=refine, device="auto")
        t = result.timings
        note = (f"{model_path.stem}, refine {refine}, on {result.device}; in-process: affine {t.get('affine')} s, "
                f"network{' + refine' if refine else ''} {t.get('learned')} s")
        return PeerResult(u_ras=result.displacement_ras, seconds=measure.seconds, peak_rss_mb=measure.peak_mb,
                          notes=note, warped=result.warped)
    return run


def learned_methods(ndim: int = 3) -> dict[str, Callable]:
    """The bundled VoxelMorph-diff model, alone and refined, when one is installed."""
    from ..errors import InputError
    from ..models.catalogue import resolve_model

    try:
        path = resolve_model("vxm_diff_3d_2mm" if ndim == 3 else "vxm_diff_2d")
    except InputError:
        return {}
    return {"toporeg learned": _learned_method(path, 0), "toporeg learned+refine50": _learned_method(path, 50)}
