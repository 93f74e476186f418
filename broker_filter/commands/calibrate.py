"""``broker-filter calibrate``: refit a bundle's calibration on its own validation objects.

The temperature and the novelty energies by number of points (``broker_filter.model.calibration``)
are fitted again, weights unchanged, from the bundle's validation split of DIR, which must
be the data the bundle was trained on (checked by digest). Use it after a change of the
calibration rule, or to calibrate a bundle made before calibration existed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from broker_filter.logging_setup import fatal
from broker_filter.model.train_config import NOVELTY_RULES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("calibrate", help="refit a bundle's calibration (temperature, novelty p-values) on its validation objects",
                                   description=__doc__)
    parser.add_argument("--model", metavar="BUNDLE", required=True, help="bundle folder")
    parser.add_argument("--data", metavar="DIR", type=Path, required=True, help="the bundle's training data (lightcurves.parquet + objects.csv)")
    parser.add_argument("--out", metavar="BUNDLE", type=Path, required=True, help="folder for the recalibrated bundle (may be --model)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--novelty", choices=NOVELTY_RULES,
                        help="what the novelty p-value ranks: the mixture energy, or the energy combined with the "
                             "entropy of the class probabilities (default: the rule the bundle's recipe recorded)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.model.bundle import BundleError, ModelBundle
    from broker_filter.model.data import DataError, load_lightcurve_table
    from broker_filter.model.train import recalibrate
    from broker_filter.model.train_config import TrainError

    try:
        bundle = recalibrate(ModelBundle.load(args.model), load_lightcurve_table(args.data), device=args.device,
                              novelty=args.novelty)
    except (BundleError, DataError, TrainError) as error:
        return fatal(f"broker-filter calibrate: {error}")
    bundle.save(args.out)
    print(f"bundle {bundle.bundle_id} -> {args.out}: temperature {bundle.calibration.temperature:.3f}, "
          f"{sum(e.size for e in bundle.calibration.energies)} held-out energies in {len(bundle.calibration.edges)} bins, "
          f"novelty p-values of the {'energy and uncertainty' if bundle.calibration.combines else 'energy'}")
    return 0
