"""`toporeg train registration|deepsim ...`: reproducible training runs (config + seed)."""

from __future__ import annotations

import argparse

TRAINERS = ("registration", "deepsim")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (registration, deepsim) from a config and a seed", add_help=False)
    p.add_argument("trainer", choices=TRAINERS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that trainer (see --help after its name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.trainer == "registration":
        from ..training.train_registration import main as trainer
    else:
        from ..training.train_deepsim import main as trainer
    return int(trainer(args.rest) or 0)
