"""Registration panel: fixed/moving volumes, optional masks, method (optimize, learned, dio, carl) and its model,
preset, transformation model (dio: its solver's), similarity and device ->
`RegistrationParams` -> the module's `RegistrationLogic` (the `toporeg register` CLI in the background).

Web choices that differ from the desktop defaults, and why: the result is always resampled into a new volume (the
page has no node selector to create one) and the moving volume is not put under the transform, so that it stays a
plain input for the next run (the desktop's "apply to moving" is a view convenience; here the warped volume is
shown over the fixed one instead). The topology panel reuses this panel's inputs, masks, preset and device, as in
the Slicer module.
"""

from __future__ import annotations

from TopoRegLogic import nodes
from TopoRegLogic.params import DEVICES, METHODS, PRESETS, SIMILARITIES, TRANSFORM_MODELS, RegistrationParams

from . import PanelContext
from .widgets import button, panel, select, status


class RegistrationPanel:
    def __init__(self, ctx: PanelContext):
        self.ctx = ctx
        ctx.state.update({"reg_status": "", "reg_models": [""] + ctx.runtime.registration.available_models()})

    def build(self) -> None:
        with panel("Registration", "toporeg-reg", "registration"):
            select("Fixed volume", "reg_fixed", "images", "toporeg-reg-fixed")
            select("Moving volume", "reg_moving", "images", "toporeg-reg-moving")
            select("Fixed mask (optional)", "reg_fixed_mask", "labels", "toporeg-reg-fixed-mask", clearable=True)
            select("Moving mask (optional)", "reg_moving_mask", "labels", "toporeg-reg-moving-mask", clearable=True)
            select("Method", "reg_method", list(METHODS), "toporeg-reg-method", default="optimize")
            select("Model (learned/dio/carl; empty: bundled)", "reg_model", "reg_models", "toporeg-reg-model",
                   default="", clearable=True)
            select("Preset", "reg_preset", list(PRESETS), "toporeg-reg-preset", default="default")
            select("Transform", "reg_transform", list(TRANSFORM_MODELS), "toporeg-reg-transform", default="svf")
            select("Similarity", "reg_similarity", list(SIMILARITIES), "toporeg-reg-similarity", default="lncc")
            select("Device", "reg_device", list(DEVICES), "toporeg-reg-device", default="auto")
            button("Register", self.start, "toporeg-reg-apply", icon="mdi-play")
            status("reg_status", "toporeg-reg-status")

    def inputs(self) -> dict:
        """The inputs, masks, preset and device, shared with the topology panel."""
        ctx = self.ctx
        return {"fixedVolume": ctx.node("reg_fixed"), "movingVolume": ctx.node("reg_moving"),
                "fixedMask": ctx.node("reg_fixed_mask"), "movingMask": ctx.node("reg_moving_mask"),
                "preset": ctx.state.reg_preset, "device": ctx.state.reg_device}

    def start(self) -> None:
        ctx, scene = self.ctx, self.ctx.runtime.scene
        inputs = self.inputs()
        moving = inputs["movingVolume"]
        warped = None
        if moving is not None and inputs["fixedVolume"] is not None and moving is not inputs["fixedVolume"]:
            warped = scene.AddNewNodeByClass(nodes.SCALAR_CLASS,
                                             scene.GenerateUniqueName(f"{moving.GetName()} registered"))
        params = RegistrationParams(**inputs, method=ctx.state.reg_method, registrationModel=ctx.state.reg_model or "",
                                    transformModel=ctx.state.reg_transform,
                                    similarity=ctx.state.reg_similarity, outputVolume=warped, applyToMoving=False,
                                    showJacobian=True)

        def done(ok: bool, status_line: str) -> None:
            ctx.state.reg_status = status_line
            last = ctx.runtime.registration.last
            if not ok:
                if warped is not None and warped.GetImageData() is None:
                    scene.RemoveNode(warped)
                return
            if warped.GetDisplayNode() is None:
                warped.CreateDefaultDisplayNodes()
            ctx.add_results([last.get("volume"), last.get("transform"), last.get("jacobian")])
            ctx.runtime.show_background(params.fixedVolume, reset=False)
            ctx.runtime.app.display_manager.show_volume_in_slice_foreground(warped)
            for view in ctx.runtime.app.view_manager.get_slice_views():
                view.set_foreground_opacity(0.5)
            ctx.refresh()

        if not ctx.jobs.start("Registration", ctx.runtime.registration, params, done) and warped is not None:
            scene.RemoveNode(warped)
