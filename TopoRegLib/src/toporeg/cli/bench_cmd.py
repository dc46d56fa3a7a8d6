"""`toporeg bench registration ...`: side-by-side benchmarks (peers and TopoReg in the same run)."""

from __future__ import annotations

import argparse

BENCHMARKS = ("registration",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (registration) and write its table, JSON and figure",
                       add_help=False)
    p.add_argument("benchmark", choices=BENCHMARKS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see --help after its name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.registration import main as registration_main  # heavy imports only when benchmarking

    return registration_main(args.rest)
