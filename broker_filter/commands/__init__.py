"""One module per ``broker-filter`` subcommand; see :mod:`broker_filter.cli`."""

from __future__ import annotations

import argparse
import importlib.util

from broker_filter.logging_setup import fatal

PROVING = "broker_filter_proving"


def proving_installed() -> bool:
    """Whether the benchmarks, failure scenarios and local Kafka (``proving/``) are installed.

    A runtime install (the image, ``pip install broker-filter``) leaves them out; the commands
    that need them then say so in one line instead of failing on an import.
    """
    return importlib.util.find_spec(PROVING) is not None


def register_without_proving(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """The parser of a command whose code lives in ``proving/`` when that package is absent."""
    parser = subparsers.add_parser(name, help=f"{help_text} (needs broker-filter-proving)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda args: _proving_missing(name))


def _proving_missing(name: str) -> int:
    return fatal(f"broker-filter {name}: needs the broker-filter-proving package, which a runtime install leaves out; "
                 "from a clone of the repository: pip install -e ./proving")
