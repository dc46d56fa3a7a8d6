"""`toporeg bench carl`: registration under large misalignment (translation, rotation, scale of the moving content)
and CARL's equivariance to integer translations, against VoxelMorph-diff and the engine (seed B.7/B.8).

    toporeg bench carl [--out docs/benchmarks] [--cases 6] [--quick] [--carl-model carl_2d|PATH]
                       [--learned-model vxm_diff_2d|PATH]

Every pair's moving content is moved on its own grid (same geometry as the fixed, zeros outside) about the grid
centre: translated 0/10/20/30 mm along a random in-plane direction, rotated 10/20°, or scaled 0.9/1.1, one factor at
a time; Dice, p95 error against the known field (which follows the move), folding and time per method and
magnitude. Equivariance: the moving content shifted by s (multiples of 8 mm = 4 voxels of the 2 mm model grid)
moves every correspondence by s, so an equivariant method gives u_T(x) = u(x) + s; we report |u_T − (u + s)| in
the fixed brain. Writes carl.md, carl.json and carl.png into --out.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import numpy as np

from ..methods import MethodOptions
from ..registration import preset
from .peers import identity
from .robust_cases import (CaseMethod, RobustCase, base_cases, log, model_info, moved, run_all, run_case,
                           similarity_ras, toporeg_method)
from .robust_report import case_lines, header, metric_table, parser, pivot_table, summary, write_outputs

DEFAULT_CASES = 6
MARGIN_VOX = 16  # 32 mm of zeros around each slice, so a 30 mm move keeps the content on the grid
MISALIGN = {  # key → (column header, translation mm, rotation degrees, scale)
    "none": ("none", 0.0, 0.0, 1.0), "t10": ("10 mm", 10.0, 0.0, 1.0), "t20": ("20 mm", 20.0, 0.0, 1.0),
    "t30": ("30 mm", 30.0, 0.0, 1.0), "r10": ("10°", 0.0, 10.0, 1.0), "r20": ("20°", 0.0, 20.0, 1.0),
    "s0.9": ("× 0.9", 0.0, 0.0, 0.9), "s1.1": ("× 1.1", 0.0, 0.0, 1.1)}
COLUMNS = {k: v[0] for k, v in MISALIGN.items()}
QUICK = ("none", "t30", "r20", "s1.1")
SHIFTS_MM = ((8.0, 0.0), (0.0, -16.0), (24.0, 16.0))
EQUIVARIANCE = ("CARL", "CARL depth 1", "VoxelMorph-diff, no pre-alignment")


def build_methods(carl_model: str | None, learned_model: str | None) -> dict[str, tuple[CaseMethod, str]]:
    def carl(**kw: Any) -> CaseMethod:
        return toporeg_method("carl", MethodOptions(model=carl_model, **kw))

    def learned(**kw: Any) -> CaseMethod:
        return toporeg_method("learned", MethodOptions(model=learned_model, **kw))
    no_affine = preset("default").with_(affine_iterations=(0,), initial_alignment="none")
    return {
        "identity": (lambda c: identity(c.fixed, c.moving), "no registration (u = 0): the 'before' row"),
        "CARL": (carl(), "`--method carl`, 3 steps, no pre-alignment (its default)"),
        "CARL + affine": (carl(prealign="affine"), "`--method carl --prealign affine`: after the engine's affine"),
        "CARL depth 1": (carl(depth=1), "`--method carl --depth 1`: coordinate attention only (the equivariant "
                                        "step), no pre-alignment"),
        "VoxelMorph-diff": (learned(), "`--method learned`: VoxelMorph-diff 2D after the engine's affine (default)"),
        "VoxelMorph-diff, no pre-alignment": (learned(prealign="none"), "`--method learned --prealign none`"),
        "optimize": (toporeg_method("optimize"), "`--method optimize`, preset default: centre of mass, rigid + "
                                                 "affine, then svf (LNCC)"),
        "optimize, no affine stage": (toporeg_method("optimize", settings=no_affine), "preset default with "
                                      "`affine_iterations=(0,)` and `initial_alignment='none'` (RegistrationSettings): "
                                      "identity start, svf only"),
    }


def misaligned(rc: RobustCase, keys: list[str]) -> dict[str, Any]:
    """key → the case with its moving content moved; direction and rotation sign drawn once per case."""
    rng = np.random.default_rng(rc.seed + 7919)
    theta, sign = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
    out = {}
    for k in keys:
        _, t, angle, scale = MISALIGN[k]
        s = similarity_ras(rc.case.fixed, t * np.array([np.cos(theta), np.sin(theta)]), sign * angle, scale)
        out[k] = moved(rc.case, s, f"translated {t:g} mm towards {np.degrees(theta):.0f}°, rotated "
                                   f"{sign * angle:+g}°, scaled {scale:g} about the grid centre")
    return out


def equivariance(cases: list[RobustCase], methods: dict[str, CaseMethod], shifts: tuple, say=log) -> list[dict]:
    """Per case, method and shift s: |u_T − (u + s)| (mm) in the fixed brain, T = moving content shifted by s."""
    out = []
    for rc in cases:
        inside = np.asarray(rc.case.fixed_mask.data) > 0
        for name in EQUIVARIANCE:
            base = run_case(rc.case, name, methods[name], "equivariance", say, keep_field=True)
            for s in shifts:
                case = moved(rc.case, similarity_ras(rc.case.fixed, s), f"shifted by ({s[0]:+g}, {s[1]:+g}) mm")
                row = run_case(case, name, methods[name], "equivariance", say, keep_field=True)
                rec: dict[str, Any] = {"condition": "equivariance", "case": rc.case.name, "method": name,
                                       "shift_mm": list(s)}
                if "error" in base or "error" in row:
                    rec["error"] = base.get("error") or row["error"]
                else:
                    err = np.linalg.norm(row["u_ras"] - base["u_ras"] - np.r_[s, 0.0], axis=-1)[inside]
                    rec.update(equivariance_mean_mm=float(err.mean()), dice=row["dice"], dice_unshifted=base["dice"],
                               equivariance_p95_mm=float(np.percentile(err, 95)))
                out.append(rec)
    return out


def markdown(doc: dict[str, Any]) -> str:
    rows, methods = doc["rows"], list(doc["methods"])
    shifts = ", ".join(f"({a:+g}, {b:+g})" for a, b in doc["shifts_mm"])
    lines = header(doc, "CARL benchmark (2D): large misalignment and equivariance") + [
        f"{len(doc['cases'])} pair(s) (listed below), slices zero-padded by {MARGIN_VOX * 2} mm. The moving content "
        "is moved on its own grid (the fixed geometry; zeros outside) about the grid centre, one factor at a time: "
        "translation along a random in-plane direction per pair, rotation (sign random per pair), isotropic scale. "
        f"CARL works on a {' × '.join(f'{x:g}' for x in doc['model_fov_mm'])} mm grid centred on the fixed brain "
        "(its card), so large moves also push content towards its field of view's edge. Dice: mean over the fixed "
        "labels, moving labels pulled through each method's RAS-mm field; p95 error: |u − u_true| in the fixed "
        "brain, u_true(x) = S(x + u(x)) − x; folding: % det J ≤ 0 in the fixed brain; time: wall seconds on CPU "
        "after one warm-up call per method. Cells: mean ± sd over pairs.", "", "## Dice vs misalignment", ""]
    columns = doc["columns"]
    lines += pivot_table(rows, methods, "dice", columns)
    lines += ["## p95 error (mm) vs misalignment", ""] + pivot_table(rows, methods, "p95_error_mm", columns)
    lines += ["## Folding and time (all misalignments pooled)", ""]
    lines += metric_table(rows, methods, list(columns), ("folding_percent", "seconds"))
    lines += ["## Equivariance to integer translations (seed B.1/B.8)", "",
              "Shifting the moving content by s mm maps every moving point y to y + s, so x_moving' = x + u(x) + s: "
              "an equivariant method returns u_T = u + s. Error |u_T(x) − (u(x) + s)| in the fixed brain, mean and "
              f"95th percentile per registration, then mean ± sd over pairs × shifts s = {shifts} mm (multiples of "
              "4 voxels of the 2 mm model grid, where the coordinate-attention step is exactly equivariant up to "
              "boundary effects). Dice: after the shift.", ""]
    lines += metric_table(doc["equivariance"], list(EQUIVARIANCE), ["equivariance"],
                          ("equivariance_mean_mm", "equivariance_p95_mm", "dice"))
    return "\n".join(lines + case_lines(doc))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser("toporeg bench carl", __doc__.split("\n\n")[0], ("carl", "learned"), DEFAULT_CASES).parse_args(argv)
    n = args.cases or (1 if args.quick else DEFAULT_CASES)
    shifts = SHIFTS_MM[:1] if args.quick else SHIFTS_MM
    columns = {k: COLUMNS[k] for k in (QUICK if args.quick else MISALIGN)}
    carl_label, card = model_info("carl", args.carl_model)
    learned_label, _ = model_info("learned", args.learned_model)
    dom = card.get("input_domain", {})
    fov = [n * s for n, s in zip(dom.get("shape", []), dom.get("spacing_mm", []))]
    methods = build_methods(args.carl_model, args.learned_model)
    calls = {k: m for k, (m, _) in methods.items()}
    cases = base_cases(n, margin_vox=MARGIN_VOX, seed=args.seed)
    per_case = [misaligned(rc, list(columns)) for rc in cases]
    rows = run_all({k: [c[k] for c in per_case] for k in columns}, calls)
    eq = equivariance(cases, calls, shifts)
    doc = {"command": "toporeg bench carl " + shlex.join(argv), "model_fov_mm": fov, "columns": columns,
           "models": {"carl": carl_label, "learned": learned_label}, "misalignments": {k: MISALIGN[k] for k in columns},
           "shifts_mm": [list(s) for s in shifts], "margin_mm": 2 * MARGIN_VOX,
           "cases": [{"name": c.case.name, "description": c.case.description} for c in cases],
           "methods": {k: note for k, (_, note) in methods.items()}, "rows": rows,
           "summary": summary(rows, list(methods), list(columns)), "equivariance": eq}
    for path in write_outputs(doc, args.out, "carl", markdown, columns):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
