"""``broker-filter split``: hold out a stratified share of labelled stars before anything is fitted.

Writes OUT/train and OUT/external in the lightcurves.parquet + objects.csv layout: train a
bundle on OUT/train, then judge it with ``broker-filter evaluate --external --data
OUT/external --train-data OUT/train``. Every object of a novelty set goes to OUT/external.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from broker_filter.logging_setup import fatal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("split", help="hold out a stratified share of labelled stars (external test set)",
                                   description=__doc__)
    parser.add_argument("--data", metavar="DIR", type=Path, required=True, help="light curves: lightcurves.parquet + objects.csv")
    parser.add_argument("--out", metavar="OUT", type=Path, required=True, help="folder for OUT/train and OUT/external")
    parser.add_argument("--fraction", type=float, default=0.15, help="share of each known class held out (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.model.classes import ClassMapping
    from broker_filter.model.data import DataError, split_lightcurve_table

    try:
        counts = split_lightcurve_table(args.data, args.out, ClassMapping(), args.fraction, args.seed)
    except (DataError, OSError) as error:
        return fatal(f"broker-filter split: {error}")
    print(f"train: {counts['train']} objects in {args.out / 'train'}; external: {counts['external']} objects in {args.out / 'external'}")
    return 0
