"""`toporeg train registration|deepsim|topology|segmentation|neuralizer|dio|carl ...`: reproducible training runs (config + seed)."""

from __future__ import annotations

import argparse
import importlib

TRAINERS = {"registration": "train_registration", "deepsim": "train_deepsim", "topology": "train_topology",
            "segmentation": "train_segmentation", "neuralizer": "train_neuralizer",
            "dio": "train_dio", "carl": "train_carl"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=f"train a model ({', '.join(TRAINERS)}) from a config and a seed",
                       add_help=False)
    p.add_argument("trainer", choices=list(TRAINERS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of that trainer (see --help after its name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    trainer = importlib.import_module(f"..training.{TRAINERS[args.trainer]}", __package__).main
    return int(trainer(args.rest) or 0)
