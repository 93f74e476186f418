"""``broker-filter replay SOURCE... --out DIR``: the daemon's pipeline on archived alerts, no Kafka."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from broker_filter.logging_setup import fatal, report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="run the daemon's pipeline on archives (.avro files, folders, ZTF .tar.gz) and write JSONL files",
        description=(
            "Replays archived alerts in observation-time order through the same pipeline as "
            "`broker-filter run`, writing DIR/classifications.jsonl, DIR/novelty.jsonl, "
            "DIR/dead_letter.jsonl and DIR/summary.json."
        ),
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="alert files, folders or ZTF nightly .tar.gz archives")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--model", metavar="BUNDLE", help="model bundle folder (default: the packaged default bundle)")
    parser.add_argument("--config", metavar="FILE", help="TOML config whose [decode], [state], [scoring], [inference] apply")
    parser.add_argument("--state", metavar="FILE", help="SQLite state file to resume from and update (default: in memory)")
    parser.add_argument("--min-points", type=int, metavar="N", help="override [scoring] min_points")
    parser.add_argument("--device", help="override [inference] device (auto, cpu, cuda, cuda:1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.config import ConfigError, load_config, with_overrides
    from broker_filter.logging_setup import setup_logging
    from broker_filter.metrics import Metrics
    from broker_filter.pipeline import pipeline_from_config
    from broker_filter.replay import replay
    from broker_filter.state import StateError
    from broker_filter.model.bundle import BundleError

    try:
        missing = [source for source in args.sources if not Path(source).exists()]
        if missing:
            raise FileNotFoundError(f"alert source {missing[0]} does not exist")
        config = load_config(args.config)
        inference = {"bundle": args.model} if args.model else {}
        if args.device:
            inference["device"] = args.device
        scoring = {"min_points": args.min_points} if args.min_points is not None else {}
        config = with_overrides(config, inference=inference, scoring=scoring, state={"path": args.state or ""})
        setup_logging(config.logging, args)  # the command line wins over [logging]
        pipeline = pipeline_from_config(config, Metrics())
        try:
            summary = replay(
                args.sources, args.out, pipeline, max_batch=config.inference.max_batch, progress=not args.no_progress
            )
        finally:
            pipeline.inferencer.close()
    except (ConfigError, BundleError, StateError, FileNotFoundError) as error:
        return fatal(f"broker-filter replay: {error}")
    print(json.dumps({k: v for k, v in summary.__dict__.items()}, indent=None))
    if summary.labelled is not None:
        from broker_filter.truth import truth_table

        report(truth_table(json.loads((Path(args.out) / "truth.json").read_text())))
    return 0
