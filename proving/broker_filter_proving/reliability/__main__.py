"""``python -m broker_filter_proving.reliability SCENARIO``: the same long runs as ``broker-filter reliability``."""

from __future__ import annotations

import argparse
import sys

from broker_filter_proving.reliability.long_run import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_filter_proving.reliability", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
