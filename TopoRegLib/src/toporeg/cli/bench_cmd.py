"""`toporeg bench registration|topology|uncertainty ...`: side-by-side benchmarks (peers/baselines and TopoReg, or
the four uncertainty methods, in the same run)."""

from __future__ import annotations

import argparse

BENCHMARKS = ("registration", "topology", "uncertainty", "neuralizer", "batch", "dio", "carl")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (registration, topology, uncertainty, neuralizer, batch, dio, carl) and write its table, JSON "
                                     "and figure", add_help=False)
    p.add_argument("benchmark", choices=BENCHMARKS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see --help after its name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "dio":
        from ..bench.dio import main as dio_main

        return dio_main(args.rest)
    if args.benchmark == "carl":
        from ..bench.carl import main as carl_main

        return carl_main(args.rest)
    if args.benchmark == "batch":
        from ..bench.batch import main as batch_main

        return batch_main(args.rest)
    if args.benchmark == "neuralizer":
        from ..bench.neuralizer import main as neuralizer_main

        return neuralizer_main(args.rest)
    if args.benchmark == "uncertainty":
        from ..bench.uncertainty import main as uncertainty_main

        return uncertainty_main(args.rest)
    if args.benchmark == "topology":  # heavy imports only when benchmarking
        from ..bench.topology import main as topology_main

        return topology_main(args.rest)
    from ..bench.registration import main as registration_main

    return registration_main(args.rest)
