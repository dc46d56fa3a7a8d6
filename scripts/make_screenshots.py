#!/usr/bin/env python
"""Render the README / extension-catalogue screenshots from REAL Slicer slice views.

    scripts/env.sh python scripts/make_screenshots.py                        # all four PNGs
    scripts/env.sh python scripts/make_screenshots.py --only registration    # ~20 s on 2 busy CPU cores
    scripts/env.sh python scripts/make_screenshots.py --only topology        # ~35 s
    scripts/env.sh python scripts/make_screenshots.py --only uncertainty     # ~12 s
    scripts/env.sh python scripts/make_screenshots.py --only neuralizer      # ~70 s
    scripts/env.sh python scripts/make_screenshots.py --workdir /tmp/shots --reuse   # skip the computations

Each view is a real slice view: a trame-slicer `SlicerApp` (real MRML scene, slice logics, displayable managers)
with offscreen `DirectViewFactory` views rendered through EGL, captured from the render window; the panel figures
run the Slicer module's own Qt-free logic (`TopoReg/TopoRegLogic`) exactly as its panels do.

- registration (Resources/Screenshots/TopoReg-Registration.png): Colin27 T1 registered onto the ICBM152 T1
  (default preset, CPU); warped moving over fixed, and the Jacobian determinant in the brain mask.
- topology (TopoReg-Topology.png): the topology panel (`TopologyLogic`, optimize, intensity features, fast preset,
  30 iterations) on ICBM152 with an inserted lesion vs Colin27; heatmap display map, lesion outline, legend.
- uncertainty (TopoReg-Uncertainty.png): the uncertainty panel (`UncertaintyLogic`, bundled tissue model, 16
  samples) on the Colin27 whole-head T1; entropy overlay (bits), segment outlines, legend.
- neuralizer (TopoReg-Neuralizer.png): the Neuralizer panel (`NeuralizerLogic`, segment, bundled `neuralizer_2d` or
  --neuralizer-model) on the ICBM152 T1 taught by one Colin27 T1 + AAL pair (left thalamus, label 77); context view
  with the label outline beside three target views with the resulting segmentation.

The code is in `scripts/screenshots/` (one module per screenshot, shared scene / figure helpers).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshots import neuralizer, registration, topology, uncertainty  # noqa: E402

PANELS = {"registration": registration, "topology": topology, "uncertainty": uncertainty, "neuralizer": neuralizer}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=list(PANELS), default=None, help="make one screenshot only")
    p.add_argument("--out", type=Path, default=registration.OUT, help="registration screenshot")
    p.add_argument("--topology-out", type=Path, default=topology.OUT, help="topology screenshot")
    p.add_argument("--uncertainty-out", type=Path, default=uncertainty.OUT, help="uncertainty screenshot")
    p.add_argument("--neuralizer-out", type=Path, default=neuralizer.OUT, help="Neuralizer screenshot")
    p.add_argument("--neuralizer-model", default=neuralizer.MODEL,
                   help=f"bundled model name or .safetensors file (card beside it) (default {neuralizer.MODEL})")
    p.add_argument("--workdir", type=Path, default=None, help="keep intermediate files here")
    p.add_argument("--reuse", action="store_true", help="reuse the computations' outputs found in --workdir")
    args = p.parse_args(argv)
    outs = {"registration": args.out, "topology": args.topology_out, "uncertainty": args.uncertainty_out,
            "neuralizer": args.neuralizer_out}
    options = {"neuralizer": {"model": args.neuralizer_model}}

    with tempfile.TemporaryDirectory(prefix="toporeg-shots-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name, panel in PANELS.items():
            if args.only in (None, name):
                panel.make(workdir, outs[name], args.reuse, **options.get(name, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
