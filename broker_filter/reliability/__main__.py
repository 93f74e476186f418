"""``python -m broker_filter.reliability fuzz|bad-input-decode [--cases N]``: the long runs that need no daemon.

The Kafka scenarios (crash, broker restart, overload) are functions of
:mod:`broker_filter.reliability.scenarios`, run by ``tests/reliability`` with CI counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from broker_filter.reliability.craft import simulate_seeds
from broker_filter.reliability.fuzz import Fuzzer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_filter.reliability", description=__doc__)
    parser.add_argument("scenario", choices=["fuzz"])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        seeds = [simulate_seeds(Path(scratch) / "ztf", "ztf", max_objects=3), simulate_seeds(Path(scratch) / "lsst", "lsst", max_objects=2)]
        fuzzer = Fuzzer(seeds)
        report = fuzzer.run(args.cases, args.seed, progress=lambda n: print(f"{n:,} cases", file=sys.stderr, flush=True))
    text = json.dumps(report.as_dict(), indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report.failure_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
