"""The long runs of issue 6 at full counts, one scenario per call, each ending in a table row.

``broker-filter reliability SCENARIO`` (and ``python -m broker_filter_proving.reliability``) call
:func:`run`. The Kafka scenarios start their own local broker in ``--workdir`` (the broker
restart stops and starts it, so it cannot be a shared one), simulate a labelled ZTF stream
from the committed light curves, run the uninterrupted reference where the scenario compares
against one, and print the :class:`~broker_filter_proving.reliability.scenarios.Outcome` as a row of
docs/RELIABILITY.md's table followed by its details as JSON (also written to ``--out``).
The CI runs the same scenario functions with small counts (``tests/reliability``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIOS = ("crash", "broker-restart", "overload", "fuzz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--objects", type=int, default=240, help="simulated objects (~45 alerts each)")
    parser.add_argument("--garbage-every", type=int, default=100, help="one undecodable message every N (0: none)")
    parser.add_argument("--min-points", type=int, default=60,
                        help="[scoring] min_points: alerts of objects with fewer points in a band are not scored "
                             "(each still gets one below_minimum record)")
    parser.add_argument("--partitions", type=int, default=2, help="partitions of the input and output topics")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated stream and of the failure moments")
    parser.add_argument("--kills", type=int, default=20, help="crash: kill -9 of the daemon")
    parser.add_argument("--stops", default="SIGTERM,SIGKILL,SIGTERM,SIGKILL",
                        help="broker-restart: comma-separated SIGTERM / SIGKILL, one broker stop each")
    parser.add_argument("--downtime", type=float, default=5.0, help="broker-restart: seconds the broker stays down")
    parser.add_argument("--factor", type=float, default=10.0, help="overload: input rate / measured processing rate")
    parser.add_argument("--seconds", type=float, default=180.0, help="overload: how long the input is sent at that rate")
    parser.add_argument("--calibration", type=int, default=1500, help="overload: alerts sent first to measure the rate")
    parser.add_argument("--queue-max", type=int, default=512,
                        help="[inference] queue_max, also the most alerts one transaction holds (crash: 128 gives more kill points)")
    parser.add_argument("--rss-limit-mb", type=float, default=1500.0, help="overload: bound on the daemon's resident memory")
    parser.add_argument("--metrics-port", type=int, default=0, help="overload: the daemon's metrics port (0: a free one)")
    parser.add_argument("--cases", type=int, default=100_000, help="fuzz: cases")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the broker, state and logs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the outcome as JSON here")


def run(args: argparse.Namespace) -> int:
    if args.scenario == "fuzz":
        return _fuzz(args)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _kafka_scenario(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="broker-filter-reliability-") as scratch:
        return _kafka_scenario(args, Path(scratch))


def _progress(text: str) -> None:
    from broker_filter.logging_setup import json_logging_active, report

    report(text if json_logging_active() else f"{time.strftime('%H:%M:%S')} {text}")  # a JSON line carries its own time


def _counter(total: int, what: str):
    """A callback for the scenario's on_kill / on_stop: 'kill 3/20 after 41 s, about 232 s left: {...}'."""
    started = time.monotonic()

    def step(k: int, entry: dict) -> None:
        elapsed = time.monotonic() - started
        left = elapsed / (k + 1) * (total - k - 1)
        _progress(f"{what} {k + 1}/{total} after {elapsed:.0f} s, about {left:.0f} s left: {entry}")

    return step


def _report(row: str, details: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(details, indent=1, default=str)
    print(row)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


def _fuzz(args: argparse.Namespace) -> int:
    from broker_filter_proving.reliability.craft import simulate_seeds
    from broker_filter_proving.reliability.fuzz import Fuzzer

    with tempfile.TemporaryDirectory() as scratch:
        seeds = [simulate_seeds(Path(scratch) / "ztf", "ztf", max_objects=3), simulate_seeds(Path(scratch) / "lsst", "lsst", max_objects=2)]
        report = Fuzzer(seeds).run(args.cases, args.seed, progress=lambda n: _progress(f"{n:,} cases"))
    details = report.as_dict()
    verdict = "pass" if report.failure_count == 0 else "FAIL"
    _report(f"| fuzz, decoder + state merge | 1 | {args.cases:,} | – | – | – | {verdict} |", details, args.out)
    return 0 if report.failure_count == 0 else 1


def _kafka_scenario(args: argparse.Namespace, workdir: Path) -> int:
    from broker_filter_proving.reliability.harness import Deployment
    from broker_filter_proving.reliability.scenarios import DAEMON_SECTIONS, labelled_stream
    from broker_filter_proving.local_kafka import LocalKafka

    sections = {**DAEMON_SECTIONS, "scoring": {"min_points": args.min_points}}
    sections["inference"] = {**DAEMON_SECTIONS["inference"], "queue_max": args.queue_max}
    _progress(f"simulating {args.objects} objects")
    stream = labelled_stream(workdir / "stream", objects=args.objects, seed=args.seed, garbage_every=args.garbage_every)
    _progress(f"{len(stream):,} input messages ({sum(1 for r in stream.record_ids if r is None)} undecodable)")
    with LocalKafka(workdir=workdir / "kafka") as broker:
        _progress(f"broker {broker.bootstrap} (log {broker.log_file})")
        name = f"reliability-{args.scenario}-{args.seed}-{time.time_ns() % 10**8}"
        if args.scenario == "overload":
            from broker_filter_proving.local_kafka import free_port

            outcome = _overload(args, Deployment.named(broker.bootstrap, name), stream, workdir, sections, free_port)
        else:
            reference = _reference(stream, workdir, sections)
            if args.scenario == "crash":
                from broker_filter_proving.reliability.scenarios import crash_run

                # static membership: a restarted incarnation takes its predecessor's partitions at once
                target = Deployment.named(broker.bootstrap, name, client={"group.instance.id": f"{name}-0"})
                outcome = crash_run(target, stream, reference, workdir, kills=args.kills, seed=args.seed, partitions=args.partitions,
                                    sections=sections, on_kill=_counter(args.kills, "kill"))
            else:
                from broker_filter_proving.reliability.scenarios import broker_restart_run

                stops = [s.strip() for s in args.stops.split(",") if s.strip()]
                outcome = broker_restart_run(broker, Deployment.named(broker.bootstrap, name), stream, reference, workdir, stops=stops,
                                             seed=args.seed, downtime_s=args.downtime, partitions=args.partitions, sections=sections,
                                             on_stop=_counter(len(stops), "broker stop"))
            outcome.details["reference_seconds"] = round(reference.seconds, 1)
    outcome.details["settings"] = {"objects": args.objects, "seed": args.seed, "partitions": args.partitions, **sections}
    _report(outcome.row(), outcome.details, args.out)
    return 0 if outcome.passed else 1


def _reference(stream, workdir: Path, sections):
    from broker_filter.inference import Inferencer
    from broker_filter_proving.reliability.scenarios import reference_run

    _progress("uninterrupted reference run (archive replay)")
    reference = reference_run(stream, workdir, Inferencer(None, "cpu", mixed_precision=False), sections)
    _progress(f"reference: {len(reference.records):,} records in {reference.seconds:.0f} s")
    return reference


def _overload(args: argparse.Namespace, deployment, stream, workdir: Path, sections, free_port):
    from broker_filter_proving.reliability.scenarios import overload_run

    port = args.metrics_port or free_port()
    _progress(f"overload: calibrating on {args.calibration} alerts, then {args.factor:g}x for {args.seconds:.0f} s")
    return overload_run(deployment, stream, workdir, factor=args.factor, seconds=args.seconds, rss_limit_mb=args.rss_limit_mb,
                        calibration=args.calibration, partitions=args.partitions, sections=sections, metrics_port=port)
