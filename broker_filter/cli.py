"""The ``broker-filter`` console command: one entry point, one module per subcommand.

Each module in :mod:`broker_filter.commands` exposes ``register(subparsers)``, which adds
its parser and sets ``handler`` (a function of the parsed arguments returning an exit
status). Heavy imports (torch, confluent-kafka) happen inside handlers so that
``broker-filter --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from broker_filter import __version__
from broker_filter.commands import CommandParser
from broker_filter.logging_setup import LoggingSetupError, add_logging_arguments, configure_from_args, fatal

#: Subcommands, as typed; each is the module ``broker_filter.commands.<name with - as _>``.
COMMANDS = (
    "inspect",
    "produce",
    "simulate",
    "train",
    "evaluate",
    "split",
    "calibrate",
    "evaluate-stream",
    "replay",
    "run",
    "check",
    "bench",
    "kafka",
    "reliability",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker-filter",
        description="Variable-star classification and novelty flags for ZTF and Rubin alert streams.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_logging_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"broker_filter.commands.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_from_args(args)
        return int(args.handler(args) or 0)
    except LoggingSetupError as error:
        return fatal(f"broker-filter: {error}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
