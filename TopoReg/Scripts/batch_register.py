"""Register many image pairs with the TopoReg module's logic, without the GUI.

In Slicer (its Python, the installed TopoReg module and its bundled `toporeg` package):

    Slicer --no-main-window --python-script /path/to/TopoReg/Scripts/batch_register.py \
        --pairs pairs.csv --out results --preset fast

`pairs.csv` holds `fixed,moving` file paths per line (an optional header line `fixed,moving`); or use
`--folder DATA` where every sub-folder holds `fixed.nii.gz` and `moving.nii.gz`. Per pair the script loads both
volumes, runs `TopoRegLogic.process` (in-process, blocking; no popups), writes `<case>/transform.h5` (Slicer/ITK
displacement field, fixed->moving), `<case>/warped.nii.gz` (moving on the fixed grid), `<case>/jacobian.nii.gz`,
and one line per case in `results/summary.csv` (case, status, seconds, folding %). The scene is cleared between
cases, so memory stays flat. Failed cases are reported and skipped; the exit code is the number of failures.

The same without Slicer, with the `toporeg` command line (its outputs: warped.nii.gz, displacement.nii.gz in
ITK/LPS, jacobian.nii.gz, report.json), as a shell loop:

    for case in data/*/; do
      name=$(basename "$case")
      toporeg register "$case/fixed.nii.gz" "$case/moving.nii.gz" --out "results/$name" --preset fast --progress none \
        || echo "$name failed" >&2
    done

    # Windows PowerShell
    Get-ChildItem data -Directory | ForEach-Object {
      toporeg register "$($_.FullName)\\fixed.nii.gz" "$($_.FullName)\\moving.nii.gz" --out "results\\$($_.Name)" --preset fast }

Everything below uses storage nodes rather than `slicer.util.loadVolume`/`saveNode`, so the functions also run
headless on slicer-core (Testing/slicer/tests/test_slicer_module.py drives `run_batch`).
"""

import argparse
import csv
import sys
from pathlib import Path


def read_pairs(pairs_csv=None, folder=None):
    """[(case name, fixed path, moving path)] from a CSV file or a folder of case sub-folders."""
    pairs = []
    if pairs_csv:
        with open(pairs_csv, newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0].strip().lower() != "fixed":
                    fixed, moving = row[0].strip(), row[1].strip()
                    pairs.append((f"{len(pairs):03d}_{Path(moving).name.split('.')[0]}", fixed, moving))
    if folder:
        for case in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
            pairs.append((case.name, str(case / "fixed.nii.gz"), str(case / "moving.nii.gz")))
    return pairs


def _save(node, path):
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise RuntimeError(f"cannot write {path}")


def register_pair(logic, fixed_path, moving_path, case_dir, *, preset="default", transform="svf", settings=None):
    """One case: load, register in-process, save outputs; returns (status, seconds, folding %)."""
    import slicer

    from TopoRegLogic import nodes

    scene = slicer.mrmlScene
    params = logic.getParameterNode()
    params.fixedVolume = nodes.load_volume_node(scene, fixed_path, "fixed")
    params.movingVolume = nodes.load_volume_node(scene, moving_path, "moving")
    params.preset, params.transformModel = preset, transform
    params.outputTransform = None
    params.outputVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    status = logic.process(params, settings=settings)
    case_dir.mkdir(parents=True, exist_ok=True)
    _save(params.outputTransform, case_dir / "transform.h5")
    _save(params.outputVolume, case_dir / "warped.nii.gz")
    last = logic.registration.last
    if last.get("jacobian") is not None:
        _save(last["jacobian"], case_dir / "jacobian.nii.gz")
    outputs = last["outputs"]
    return status, outputs.seconds, outputs.folding_percent


def run_batch(pairs, out_dir, *, preset="default", transform="svf", settings=None, log=print):
    """Register every pair; returns the number of failures. `settings` overrides the preset (tests)."""
    import slicer

    from TopoReg import TopoRegLogic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with open(out_dir / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "status", "seconds", "folding_percent"])
        for case, fixed, moving in pairs:
            slicer.mrmlScene.Clear()
            try:
                status, seconds, folding = register_pair(TopoRegLogic(), fixed, moving, out_dir / case,
                                                         preset=preset, transform=transform, settings=settings)
                writer.writerow([case, "ok", f"{seconds:.2f}", f"{folding:.4f}"])
                log(f"{case}: {status}")
            except Exception as exc:  # one bad case must not stop the batch
                failures += 1
                message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                writer.writerow([case, f"failed: {message}", "", ""])
                log(f"{case}: FAILED: {message}")
            handle.flush()
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description="Batch registration with the TopoReg Slicer module logic.")
    parser.add_argument("--pairs", help="CSV file with fixed,moving paths per line")
    parser.add_argument("--folder", help="folder of case sub-folders holding fixed.nii.gz and moving.nii.gz")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default="default", choices=["fast", "default", "accurate"])
    parser.add_argument("--transform", default="svf", choices=["svf", "displacement", "affine", "rigid"])
    args = parser.parse_args([a for a in (sys.argv[1:] if argv is None else argv) if a != "--"])
    pairs = read_pairs(args.pairs, args.folder)
    if not pairs:
        parser.error("no pairs: give --pairs or --folder")
    return run_batch(pairs, args.out, preset=args.preset, transform=args.transform)


if __name__ == "__main__":
    failures = main()
    try:
        import slicer

        slicer.util.exit(failures)  # leave Slicer when run with --python-script
    except (ImportError, AttributeError):
        sys.exit(failures)
