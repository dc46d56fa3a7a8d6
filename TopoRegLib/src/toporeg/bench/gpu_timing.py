"""GPU timings of the optimisation engine on a 1 mm 3D pair (issue goal: < 5 s per registration).

The pair is built from the bundled 2 mm samples resampled to a 1 mm grid (Colin27 → ICBM152), so the
run needs nothing but the repository: `python -m toporeg.bench.gpu_timing --out DIR`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import sample_path
from .metrics import mask_dice
from ..geometry import resample_to_spacing
from ..io import load_volume
from ..registration import preset, register


def one_mm_pair():
    fixed = resample_to_spacing(load_volume(sample_path("mni152_t1_2mm.nii.gz")), 1.0)
    moving = resample_to_spacing(load_volume(sample_path("colin27_t1_2mm.nii.gz")), 1.0)
    fixed_mask = resample_to_spacing(load_volume(sample_path("mni152_brainmask_2mm.nii.gz"), is_label=True), 1.0)
    moving_mask = resample_to_spacing(load_volume(sample_path("colin27_brainmask_2mm.nii.gz"), is_label=True), 1.0)
    return fixed, moving, fixed_mask, moving_mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--presets", default="fast,default,accurate")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fixed, moving, fixed_mask, moving_mask = one_mm_pair()
    rows = []
    for name in args.presets.split(","):
        times = []
        for _ in range(args.repeats):  # the first run includes CUDA context / kernel warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = register(fixed, moving, preset(name), device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rows.append({"preset": name, "seconds_first": round(times[0], 3), "seconds_best": round(min(times), 3),
                     "registration_seconds": result.timings.get("registration_seconds"),
                     "brain_mask_dice": round(mask_dice(result.warp_volume(moving_mask).data, fixed_mask.data), 4),
                     "folding_percent": round(100 * result.folding_fraction, 5)})
        print(json.dumps(rows[-1]), flush=True)
    info = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "shape": list(fixed.grid_shape), "spacing_mm": 1.0, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_timing.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    lines = [f"# GPU timing, 1 mm pair {fixed.grid_shape} on {info['device']} (torch {info['torch']})", "",
             "| preset | first run (s) | best of repeats (s) | brain-mask Dice | folding % |", "|---|---|---|---|---|"]
    lines += [f"| {r['preset']} | {r['seconds_first']} | {r['seconds_best']} | {r['brain_mask_dice']} | "
              f"{r['folding_percent']} |" for r in rows]
    lines += ["", "Reproduce: `python -m toporeg.bench.gpu_timing --out DIR` on a CUDA machine."]
    (args.out / "gpu_timing.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
