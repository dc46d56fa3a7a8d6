"""Paths, logging and what every panel screenshot shares: the module's Qt-free logic run the way the panel runs it."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "Resources" / "Screenshots"
MODULE_DIR = ROOT / "TopoReg"          # TopoRegLogic (the panels' Qt-free logic) is imported from here
MODELS = ROOT / "Resources" / "Models"  # the bundled models


def log(msg: str) -> None:
    print(f"[make_screenshots] {msg}", flush=True)


def use_module_logic() -> None:
    """Make `import TopoRegLogic` find the Slicer module's logic package."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))


def legend_line(node) -> str:
    """The overlay legend kept on `node` as `TopoReg.legend.*` attributes: "0 = 0 bits, 0.25 = ..."."""
    use_module_logic()
    from TopoRegLogic import topology_display

    legend = topology_display.legend_from_node(node)
    return ", ".join(f"{k} = {v}" for k, v in sorted(legend.items(), key=lambda kv: float(kv[0])))


def run_panel(logic, params, run_dir: Path, reuse: bool, what: str, timeout: float = 1800) -> str:
    """The panel's "Apply": `logic.start_background(params)` (the `toporeg` CLI in a child process) writing into
    `run_dir`, waited for, results applied to the scene; or, with `reuse` and a finished `run_dir/out`, only
    `logic.apply_results`. Returns the panel's status line."""
    out = run_dir / "out"
    if reuse and (out / "report.json").exists():
        log(f"reusing {out}")
        return logic.apply_results(params, out)
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    seen = set()

    def progress(event):  # one line per stage and tenth of the run
        key = (event.stage, int(10 * event.fraction))
        if key not in seen:
            seen.add(key)
            log(f"  {100 * event.fraction:3.0f} % {event.stage}: {event.message}")

    runner = logic.start_background(params, progress, work_dir=run_dir)
    log(runner.log[0])
    state = runner.wait(timeout=timeout, interval=0.5)
    status = logic.last.get("status", "")
    if state != "succeeded":
        raise SystemExit(f"{what} run {state}: {status}\n{logic.last.get('log', '')}")
    log(f"{what} run {time.perf_counter() - t0:.1f} s")
    return status


def model_card(report: dict, model: str) -> dict:
    """The model card (JSON beside the weights) of the model a run's report names, after checking that the run used
    `model`: the bundled model of that name, or that .safetensors file."""
    used = Path(report["model"]["path"]).resolve()
    wanted = Path(model).resolve() if model.endswith(".safetensors") else MODELS / f"{model}.safetensors"
    if used != wanted:
        raise SystemExit(f"the run used {used}, not {wanted}")
    return json.loads(used.with_suffix(".json").read_text(encoding="utf-8"))


def centroid_ras(mask, affine):
    """Centre of mass of a voxel mask ([i, j, k] order) in RAS mm."""
    import numpy as np

    affine = np.asarray(affine, float)
    return affine[:3, :3] @ np.argwhere(np.asarray(mask)).mean(0) + affine[:3, 3]
