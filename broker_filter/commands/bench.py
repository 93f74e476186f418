"""``broker-filter bench NAME``: throughput and latency of ours against a baseline, same run."""

from __future__ import annotations

import argparse
import importlib

from broker_filter.commands import proving_installed, register_without_proving
from broker_filter.logging_setup import fatal

BENCHMARKS = {
    "decode": "Avro alert decoding, with and without cutouts (ZTF 4.02)",
    "kafka": "messages/s through our Kafka source and sink against a bare confluent-kafka loop",
    "period": "period estimation against astropy Lomb-Scargle",
    "infer": "the served inferencer against a plain PyTorch eval loop",
    "e2e": "the daemon against a bare consume + decode loop, on the local broker",
}


HELP = "run a benchmark and print a table (or JSON)"


def register(subparsers: argparse._SubParsersAction) -> None:
    if not proving_installed():
        register_without_proving(subparsers, "bench", HELP)
        return
    parser = subparsers.add_parser("bench", help=HELP)
    names = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, help_text in BENCHMARKS.items():
        sub = names.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        _module(name).add_arguments(sub)
        sub.set_defaults(handler=_run)


def _module(name: str):
    module = "kafka_io" if name == "kafka" else name
    return importlib.import_module(f"broker_filter_proving.bench.{module}")


def _run(args: argparse.Namespace) -> int:
    try:
        result = _module(args.benchmark).run(args)
    except (FileNotFoundError, ValueError) as error:  # a missing sample or data folder: one line, not a traceback
        return fatal(f"broker-filter bench {args.benchmark}: {error}")
    print(result.to_json() if args.json else result.to_table())
    return 0
