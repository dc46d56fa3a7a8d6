"""`toporeg neuralize TARGET --context IMAGE OUTPUT ... --task segment|image --out DIR`: few-shot prediction of the
task that the context pairs demonstrate (Neuralizer), written on the target's own grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .common import add_run_options, run_with_outputs

OUTPUT_NAMES = ("prediction.nii.gz", "probability.nii.gz", "report.json")


def register(sub: argparse._SubParsersAction) -> None:
    from ..neuralizer.context_sets import PLANES, TASKS

    p = sub.add_parser(
        "neuralize", help="few-shot segmentation or image-to-image prediction from example pairs (Neuralizer)",
        description="Predicts, for TARGET, the task that the context pairs (an image and its output: a label map "
                    "for --task segment, an image for --task image) demonstrate. Contexts are aligned affinely "
                    "to the target, 3D targets are processed slice by slice along --plane. Writes "
                    "prediction.nii.gz (segment: 0/1 mask; image: in the context outputs' intensity units), "
                    "probability.nii.gz (segment) and report.json, all on the target's own grid.")
    p.add_argument("target", type=Path, help="image to predict for (NIfTI, NRRD, MHA, DICOM folder), 2D or 3D")
    p.add_argument("--context", nargs=2, action="append", default=[], type=Path, metavar=("IMAGE", "OUTPUT"),
                   help="one example pair: an image and its output (repeatable)")
    p.add_argument("--context-set", type=Path, default=None, metavar="FILE.json",
                   help="a saved context set (its pairs come before any --context; its task, label value and plane "
                        "are the defaults)")
    p.add_argument("--save-context-set", type=Path, default=None, metavar="FILE.json",
                   help="after a successful run, save all pairs and settings as a reusable context set")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="segment (outputs are label maps) or image (outputs are images); required without "
                        "--context-set")
    add_run_options(p)
    p.add_argument("--label-value", type=int, default=None, metavar="N",
                   help="segment: the label of the context label maps to predict (default: any non-zero label)")
    p.add_argument("--plane", choices=PLANES, default=None, help="slice direction for 3D targets (default axial)")
    p.add_argument("--model", default="neuralizer_2d", help="bundled model name or .safetensors path (with card)")
    p.add_argument("--context-size", type=int, default=None, metavar="N",
                   help="bootstrap smaller sets to N members (default: the model card's max_context)")
    p.add_argument("--no-align", dest="align", action="store_false",
                   help="contexts are already aligned with the target: skip the affine registration")
    p.add_argument("--seed", type=int, default=0, help="seed of the context bootstrapping (reproducible)")
    p.set_defaults(func=run)


def context_set(args: argparse.Namespace):
    """The run's `ContextSet`: --context-set's pairs then the --context pairs; explicit options override it."""
    from ..neuralizer.context_sets import ContextSet

    base = ContextSet.load(args.context_set) if args.context_set is not None else None
    if base is not None and args.task is not None and args.task != base.task:
        raise InputError(f"--task {args.task} but the context set is a '{base.task}' set", args.context_set)
    task = args.task or (base.task if base else None)
    if task is None:
        raise InputError("--task segment|image is required (or give a --context-set that states it)")
    name = base.name if base else (args.save_context_set.stem if args.save_context_set else "")
    label_value = args.label_value if args.label_value is not None else (base.label_value if base else None)
    pairs = (base.pairs if base else []) + [tuple(pair) for pair in args.context]
    out = ContextSet(name=name, pairs=pairs, task=task, label_value=label_value if task == "segment" else None,
                     plane=args.plane or (base.plane if base else "axial"))
    if args.label_value is not None and task != "segment":
        raise InputError("--label-value only applies to --task segment")
    if not out.pairs:
        raise InputError("no context pairs: give --context IMAGE OUTPUT (repeatable) or --context-set FILE.json")
    out.validate()
    return out


def run(args: argparse.Namespace) -> int:
    from ..models.catalogue import resolve_model

    if not Path(args.target).exists():
        raise InputError("file not found", args.target)
    if args.context_size is not None and args.context_size < 1:
        raise InputError(f"--context-size must be at least 1, got {args.context_size}")
    cs = context_set(args)
    _refuse_overwriting_inputs(args, cs)
    args.model_path = resolve_model(args.model)
    code = run_with_outputs(args, "neuralize", lambda *a: _neuralize(*a, cs=cs))
    if args.save_context_set is not None:
        cs.save(args.save_context_set)
    return code


def _neuralize(args: argparse.Namespace, out: Path, progress, timings, *, cs) -> dict:
    from ..io import load_volume
    from ..neuralizer.inference import load_neuralizer, neuralize
    from ..registration.device import resolve_device

    with timings.stage("load"):
        target = load_volume(args.target, is_label=False)
        contexts = cs.volumes()
        device = resolve_device(args.device)
        model, card = load_neuralizer(args.model_path, device)
    result = neuralize(target, contexts, model=model, card=card, task=cs.task, label_value=cs.label_value,
                       plane=cs.plane, context_size=args.context_size, align=args.align, device=device,
                       seed=args.seed, progress=progress.sub("neuralize", 0.0, 0.95))
    with timings.stage("save"):
        files = result.save(out)
    report = dict(result.report)
    timings.update({f"neuralize.{k}": v for k, v in report.pop("timings").items()})
    report["model"] = {**report["model"], "path": str(args.model_path)}
    return {"files": files, "context_set": {"name": cs.name, "file": args.context_set}, **report,
            "messages": report["warnings"]}


def _refuse_overwriting_inputs(args: argparse.Namespace, cs) -> None:
    """Inputs are never overwritten: refuse an --out folder where an output would replace an input file."""
    out = Path(args.out).resolve()
    inputs = [Path(args.target)] + [p for pair in cs.pairs for p in pair]
    for source in inputs:
        if source.resolve().parent == out and source.name in OUTPUT_NAMES:
            raise InputError(f"the output {source.name} would overwrite this input; choose another --out folder",
                             source)
