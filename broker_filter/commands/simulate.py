"""``broker-filter simulate``: a labelled alert archive from archival light curves.

See :mod:`broker_filter.streams.simulate` for what the alerts contain; the true labels go to
``labels.csv`` in the output folder (or ``NAME.labels.csv`` beside ``NAME.tar.gz``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from broker_filter.logging_setup import fatal, progress_bar, report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="turn labelled light curves into an archived alert stream")
    parser.add_argument("--lightcurves", type=Path, required=True,
                        help="folder with lightcurves.parquet + objects.csv")
    parser.add_argument("--out", type=Path, required=True,
                        help="output: a folder (container files of --alerts-per-file alerts) or NAME.tar.gz (one file per alert)")
    parser.add_argument("--survey", choices=("ztf", "lsst"), default="ztf", help="the alert schema to write: ZTF 4.02 or Rubin lsst.v10.0")
    parser.add_argument("--max-objects", type=int, default=None, help="sample this many objects (with --seed)")
    parser.add_argument("--classes", default=None, help="comma-separated survey_class values to keep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated ids, positions and alert times")
    parser.add_argument("--history-days", type=float, default=None, help="history carried (default 30 ZTF, 365 Rubin)")
    parser.add_argument("--band-map", default=None, help="override band mapping, e.g. V=r,R=r")
    parser.add_argument("--rubin-version", default="10.0", help="lsst-alert-packet schema version (8.0 or later)")
    parser.add_argument("--alerts-per-file", type=int, default=1000, help="alerts per Avro container file of a folder archive")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.streams.simulate import SimulationConfig, simulate

    band_map = dict(pair.split("=", 1) for pair in args.band_map.split(",")) if args.band_map else None
    cfg = SimulationConfig(
        survey=args.survey, max_objects=args.max_objects, seed=args.seed,
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
        history_days=args.history_days, band_map=band_map, rubin_version=args.rubin_version,
        alerts_per_file=args.alerts_per_file,
    )
    started = time.perf_counter()
    try:
        with progress_bar(desc="simulate", unit=" alerts") as bar:
            summary = simulate(args.lightcurves, args.out, cfg, on_alert=bar.update)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return fatal(f"broker-filter simulate: {exc}")
    seconds = time.perf_counter() - started
    report(f"{summary.alerts} alerts of {summary.objects} objects -> {summary.archive} "
           f"(labels: {summary.labels}; {summary.dropped_points} points in unmapped bands or invalid dropped; "
           f"{seconds:.1f} s, {summary.alerts / max(seconds, 1e-9):,.0f} alerts/s)")
    return 0
