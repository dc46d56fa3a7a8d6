"""The `toporeg` command line: one argparse parser, one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import CancelledError, TopoRegError
from . import (batch_cmd, bench_cmd, controls_cmd, demo, info, models_cmd, neuralize_cmd, register_cmd, segment_cmd,
               serve_cmd, topology_cmd, train_cmd)

SUBCOMMANDS = [info, register_cmd, topology_cmd, controls_cmd, segment_cmd, neuralize_cmd, models_cmd, demo,
               bench_cmd, train_cmd, batch_cmd, serve_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toporeg",
        description="TopoReg: topology-aware medical image registration, topological-change heatmaps, "
                    "segmentation uncertainty and few-shot Neuralizer. Research use only.")
    parser.add_argument("--version", action="version", version=f"toporeg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CancelledError:
        print("toporeg: cancelled; no outputs were written", file=sys.stderr)
        return 130
    except TopoRegError as exc:
        print(f"toporeg: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("toporeg: error: out of memory; use a smaller image, --preset fast, or --device cpu", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
