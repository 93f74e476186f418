"""``broker-filter reliability SCENARIO``: the long reliability runs of issue 6 (docs/RELIABILITY.md).

crash (kill -9 of the daemon), broker-restart (SIGTERM / SIGKILL of the broker), overload
(input at a multiple of the processing rate) and fuzz; see
:mod:`broker_filter_proving.reliability.long_run`.
"""

from __future__ import annotations

import argparse

from broker_filter.commands import proving_installed, register_without_proving

HELP = "long failure runs against a local Kafka broker; prints a table row"


def register(subparsers: argparse._SubParsersAction) -> None:
    if not proving_installed():
        register_without_proving(subparsers, "reliability", HELP)
        return
    from broker_filter_proving.reliability.long_run import add_arguments

    parser = subparsers.add_parser("reliability", help=HELP)
    add_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from broker_filter_proving.reliability.long_run import run

    return run(args)
