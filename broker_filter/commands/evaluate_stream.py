"""``broker-filter evaluate-stream``: a bundle judged as a broker would judge it, on a labelled stream.

The light curves of DIR become alerts in the survey's real schema (``simulate``), which
are replayed through the daemon's own pipeline (``replay``: state, scoring policy, period
memo, records); the records are then joined with the labels (:mod:`broker_filter.truth`).
REPORT receives the archive, the replay's files, ``metrics.json`` (false-alarm rate and
accuracy by number of points, final accuracy and calibration per object, the unseen-class
objects' detection rate and time to first flag) and ``truth.png``.

Judge a bundle only on stars it never trained on: e.g. the OUT/external part of
``broker-filter split``, with the bundle trained on OUT/train.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from broker_filter.logging_setup import fatal, report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate-stream", help="simulate a labelled stream, replay it through the daemon's pipeline, judge the records",
                                   description=__doc__)
    parser.add_argument("--data", metavar="DIR", type=Path, required=True, help="labelled light curves: lightcurves.parquet + objects.csv")
    parser.add_argument("--out", metavar="REPORT", type=Path, required=True, help="report folder (created)")
    parser.add_argument("--survey", choices=("ztf", "lsst"), default="ztf", help="alert schema of the simulated stream (default ztf)")
    parser.add_argument("--model", metavar="BUNDLE", help="bundle folder (default: the packaged default bundle)")
    parser.add_argument("--config", metavar="FILE", help="TOML config whose [scoring] and [inference] apply")
    parser.add_argument("--max-objects", type=int, metavar="N", help="simulate at most N objects")
    parser.add_argument("--novelty-sets", metavar="NAME,...",
                        help="unseen-class sets to include beside the known classes, e.g. VAR (default: all, SN Ia included)")
    parser.add_argument("--device", help="override [inference] device (auto, cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.config import ConfigError, load_config, with_overrides
    from broker_filter.metrics import Metrics
    from broker_filter.model.bundle import BundleError
    from broker_filter.pipeline import pipeline_from_config
    from broker_filter.replay import replay
    from broker_filter.streams.simulate import SimulationConfig, simulate
    from broker_filter.truth import truth_table

    try:
        config = load_config(args.config)
        inference = {"bundle": args.model} if args.model else {}
        if args.device:
            inference["device"] = args.device
        config = with_overrides(config, inference=inference, state={"path": ""})
        archive = args.out / "archive"
        shutil.rmtree(archive, ignore_errors=True)
        classes = _survey_classes(args.data, args.novelty_sets.split(",")) if args.novelty_sets else None
        simulated = simulate(args.data, archive, SimulationConfig(survey=args.survey, max_objects=args.max_objects, classes=classes))
        pipeline = pipeline_from_config(config, Metrics())
        try:
            summary = replay([archive], args.out / "replay", pipeline, max_batch=config.inference.max_batch,
                             progress=not args.no_progress)
        finally:
            pipeline.inferencer.close()
    except (ConfigError, BundleError, FileNotFoundError, ValueError) as error:
        return fatal(f"broker-filter evaluate-stream: {error}")
    truth = json.loads((args.out / "replay" / "truth.json").read_text())
    metrics = {"survey": args.survey, "data": str(args.data), "bundle_id": summary.bundle_id,
               "alerts": simulated.alerts, "simulated_objects": simulated.objects,
               "novelty_threshold": config.scoring.novelty_threshold, "min_points": config.scoring.min_points,
               "replay": {k: v for k, v in summary.__dict__.items() if k != "labelled"}, **truth}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    shutil.copyfile(args.out / "replay" / "truth.png", args.out / "truth.png")
    print(truth_table(truth))
    report(f"wrote {args.out / 'metrics.json'} and {args.out / 'truth.png'}")
    return 0


def _survey_classes(data: Path, novelty_sets: list[str]) -> tuple[str, ...]:
    """The survey classes of DIR that are known, or in one of ``novelty_sets``."""
    import pandas as pd

    from broker_filter.model.classes import ClassMapping

    mapping = ClassMapping()
    unknown = sorted(set(novelty_sets) - set(mapping.novel))
    if unknown:
        raise ValueError(f"--novelty-sets: unknown set(s) {unknown}; the mapping has {sorted(mapping.novel)}")
    names = pd.read_csv(data / "objects.csv", dtype={"survey_class": str})["survey_class"].dropna().unique()
    return tuple(sorted(c for c in names if mapping.label_of(c) is not None or mapping.novelty_set_of(c) in novelty_sets))
