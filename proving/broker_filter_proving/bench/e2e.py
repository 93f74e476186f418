"""``broker-filter bench e2e``: the whole pipeline against a bare consume + decode loop.

Three sections, each measured against its baseline in the same run:

* ``replay`` — the pipeline in this process on a labelled archive (``broker-filter
  simulate``): bare decode (``fastavro.reader`` per message, the floor any consumer pays),
  our decoder, decode + state merge + scoring decision, and the full pipeline with
  inference and records at each ``--batch-sizes`` micro-batch size and for each
  ``--variants`` entry. Differences between rows are the stages' costs: the profile as a
  table. ``--profile FILE`` also writes cProfile statistics of the full rows.
* ``kafka`` — the daemon (what ``broker-filter run`` runs, see :func:`daemon_main`) as a
  subprocess pinned to ``--cores`` CPUs against the local real broker (started by the
  benchmark unless ``--bootstrap-servers``), once per ``--variants`` entry on its own
  topics: alerts/s sustained on a pre-filled topic (after ``--warmup`` alerts that fill
  state), then end-to-end latency (input message timestamp to the committed output record
  read by a ``read_committed`` consumer) p50/p99 while new alerts are produced at 50% and
  90% of that rate; baseline: a bare confluent-kafka consume + ``fastavro.reader`` loop
  pinned to the same CPUs, on the same alerts.

Variants (the before/after of the period memo, measured in one run): ``current`` is the
pipeline as shipped (periods by :mod:`broker_filter.model.period_schedule`, remembered by
:class:`broker_filter.periods.PeriodMemo`); ``baseline`` is the behaviour it replaced, kept
here only as the measured baseline: the period searched on the whole light curve at every
scoring (:class:`WholeCurvePeriods`).
* ``state`` — merge + decision throughput and resident memory per object with 10^3..10^6
  objects held (one fresh process per size), for the current merge and for the one it
  replaced (``_merge_before`` below, kept here only as the measured baseline of the
  profile-driven fix); and the period memo's memory per object.

The headline ``speedup`` is the daemon's sustained rate over the bare loop's (kafka
section), else the best full replay row's over bare decode.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from broker_filter_proving import REPO
from broker_filter_proving.bench.report import BenchResult


DEFAULT_LIGHTCURVES = REPO / "data" / "lightcurves"
SECTIONS = ("replay", "kafka", "state")
VARIANTS = ("current", "baseline")
VARIANT_LABELS = {"current": "period memo", "baseline": "period searched at every scoring (before)"}
CONSUMER_SETTINGS = {"fetch.queue.backoff.ms": 10}  # see bench/kafka_io.py: the default 1 s backoff would be measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--archive", type=Path, help="alert archive (default: simulate one from --lightcurves)")
    parser.add_argument("--lightcurves", type=Path, default=DEFAULT_LIGHTCURVES, help="light curves to simulate the archive from")
    parser.add_argument("--objects", type=int, default=60, help="objects in the simulated archive (default 60, ~9,500 alerts)")
    parser.add_argument("--model", help="model bundle folder (default: the packaged default bundle)")
    parser.add_argument("--device", default="auto", help="inference device (auto, cpu, cuda)")
    parser.add_argument("--max-batch", type=int, default=1024, help="[inference] max_batch (default 1024)")
    parser.add_argument("--batch-sizes", help="replay: max_batch values to run the full pipeline at, e.g. 128,1024 (default: --max-batch)")
    parser.add_argument("--replay-alerts", type=int, default=3000, help="alerts in the replay section (default 3000)")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics of the full replay row(s) here (-bSIZE-VARIANT added when several)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"pipelines to compare in replay and kafka: subset of {','.join(VARIANTS)} (default both)")
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: start a local one)")
    parser.add_argument("--cores", default="0,1", help="CPUs the daemon and the bare loop are pinned to (default 0,1)")
    parser.add_argument("--warmup", type=int, default=1000, help="alerts before the sustained ones, to fill state (default 1000)")
    parser.add_argument("--messages", type=int, default=2000, help="alerts pre-filled for the sustained rate (default 2000)")
    parser.add_argument("--paced-seconds", type=float, default=20.0, help="seconds of paced input per latency row (default 20)")
    parser.add_argument("--state-sizes", default="1000,10000,100000", help="objects held in the state rows (default 1e3,1e4,1e5)")
    parser.add_argument("--points", type=int, default=60, help="points per object in the state rows (default 60)")


def run(args: argparse.Namespace) -> BenchResult:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    _variants(args)  # a typo stops the run before any work
    rows: list[list] = []
    notes: list[str] = []
    extra: dict = {}
    with ExitStack() as stack:
        archive = args.archive
        if ("replay" in sections or "kafka" in sections) and archive is None:
            archive = _simulate(args.lightcurves, args.objects, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        if "replay" in sections:
            replay_rows, replay_extra = _replay_section(archive, args)
            rows += replay_rows
            extra["replay"] = replay_extra
        if "kafka" in sections:
            kafka_rows, kafka_extra = _kafka_section(archive, args, stack)
            rows += kafka_rows
            extra["kafka"] = kafka_extra
        if "state" in sections:
            rows += _state_section([int(float(n)) for n in args.state_sizes.split(",")], args.points)
    speedup = extra.get("kafka", {}).get("ratio") or extra.get("replay", {}).get("ratio")
    for section in ("replay", "kafka"):
        if "current_over_baseline" in extra.get(section, {}):
            notes.append(f"{section}: period memo / period searched at every scoring = {extra[section]['current_over_baseline']:.2f}x (same run)")
    if archive is not None:
        notes.append(f"archive: {archive if args.archive else f'simulated, {args.objects} objects of {args.lightcurves}'}")
    return BenchResult(
        name="e2e",
        columns=["section", "row", "alerts/s", "vs baseline", "latency p50 (ms)", "latency p99 (ms)", "memory/object (B)"],
        rows=rows,
        speedup=speedup,
        notes=notes,
        extra=extra,
    )


# -- archive ---------------------------------------------------------------------------------


def _simulate(lightcurves: Path, objects: int, out: Path) -> Path:
    from broker_filter.streams.simulate import SimulationConfig, simulate

    return simulate(lightcurves, out / "archive", SimulationConfig(max_objects=objects, seed=0)).archive


def _payloads(archive: Path) -> list[bytes]:
    """Each alert as it travels on Kafka (a one-record container), in observation-time order."""
    from broker_filter.streams.archive import iter_archive

    return [item.payload for item in iter_archive([archive], order="time") if item.alert is not None]


def _variants(args: argparse.Namespace) -> list[str]:
    variants = [v.strip() for v in getattr(args, "variants", "current").split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    return variants


class WholeCurvePeriods:
    """The baseline variant's periods: none given, so the scorer searches every light curve
    whole at every scoring (the behaviour before :mod:`broker_filter.model.period_schedule`)."""

    def periods(self, lcs, estimate) -> np.ndarray:
        return np.full(len(lcs), np.nan)


def with_variant(pipeline, variant: str):
    """``pipeline`` as the variant runs it (``current``: unchanged)."""
    if variant == "baseline":
        pipeline.periods = WholeCurvePeriods()
    return pipeline


def _pipeline(args: argparse.Namespace, max_batch: int | None = None, variant: str = "current"):
    from broker_filter.config import load_config, with_overrides
    from broker_filter.metrics import Metrics
    from broker_filter.pipeline import pipeline_from_config

    config = with_overrides(
        load_config(None),
        inference={"bundle": args.model or "", "device": args.device, "max_batch": max_batch or args.max_batch},
        state={"path": ""},
    )
    return with_variant(pipeline_from_config(config, Metrics()), variant)


# -- replay section --------------------------------------------------------------------------


def _replay_section(archive: Path, args: argparse.Namespace) -> tuple[list[list], dict]:
    """Cumulative stages on the same alerts, each timed on its own pass; the first is the baseline."""
    payloads = _payloads(archive)[: args.replay_alerts]
    batch_sizes = [int(b) for b in str(args.batch_sizes or args.max_batch).split(",")]
    variants = _variants(args)
    # (row, set-up, timed pass): the set-up (decoder schema parsing, model loading) is not timed
    stages: list[tuple[str, Callable[[], object], Callable[[object, list[bytes]], None]]] = [
        ("bare decode: fastavro.reader per message", lambda: None, lambda _, p: _bare_decode(p)),
        ("decode (AlertDecoder)", _decoder, _our_decode),
        ("decode + state merge + decision", lambda: _pipeline(args), _accept_all),
    ]
    full: dict[str, tuple[int, str]] = {}  # row name -> (batch size, variant)
    for size, variant in itertools.product(batch_sizes, variants):  # the same alerts each time
        name = f"full pipeline (+ inference, records), max_batch {size}, {VARIANT_LABELS[variant]}"
        full[name] = (size, variant)
        profile = _profile_path(args.profile, size, variant, len(batch_sizes) * len(variants))
        stages.append((name, lambda size=size, variant=variant: _pipeline(args, size, variant),
                       lambda pipeline, p, size=size, profile=profile: _full_pipeline(pipeline, p, size, profile)))
    rates = {}
    for name, set_up, stage in stages:
        subject = set_up()
        gc.collect()
        started = time.perf_counter()
        stage(subject, payloads)
        rates[name] = len(payloads) / (time.perf_counter() - started)
        if hasattr(subject, "inferencer"):
            subject.inferencer.close()
    base = rates[stages[0][0]]
    rows = [["replay", name, rate, rate / base, "", "", ""] for name, rate in rates.items()]
    seconds = {name: 1000.0 / rate for name, rate in rates.items()}
    names = [name for name, _, _ in stages]
    shares = {"decode": seconds[names[1]], "merge + decision": seconds[names[2]] - seconds[names[1]]}
    for name, (size, variant) in full.items():
        shares[f"inference + records, max_batch {size}, {variant}"] = seconds[name] - seconds[names[2]]
    best = {variant: max(rates[name] for name, (_, v) in full.items() if v == variant) for variant in variants}
    extra = {"alerts": len(payloads), "ms_per_alert": shares, "ratio": best[variants[0]] / base}
    if set(variants) == set(VARIANTS):
        extra["current_over_baseline"] = best["current"] / best["baseline"]
    return rows, extra


def _profile_path(profile: Path | None, size: int, variant: str, runs: int) -> Path | None:
    """FILE, or FILE-bSIZE-VARIANT.suffix for each full row when several are run."""
    if profile is None or runs == 1:
        return profile
    return profile.with_name(f"{profile.stem}-b{size}-{variant}{profile.suffix}")


def _bare_decode(payloads: list[bytes]) -> None:
    import fastavro

    for payload in payloads:
        for _record in fastavro.reader(io.BytesIO(payload)):
            pass


def _decoder():
    from broker_filter.streams.codec import AlertDecoder

    return AlertDecoder()


def _our_decode(decoder, payloads: list[bytes]) -> None:
    for payload in payloads:
        decoder.decode(payload)


def _accept_all(pipeline, payloads: list[bytes]) -> None:
    for payload in payloads:
        pipeline.accept(payload, "bench")


def _full_pipeline(pipeline, payloads: list[bytes], max_batch: int, profile: Path | None) -> None:
    """What ``broker-filter replay`` does per alert, without the file writing."""
    from broker_filter.batching import MicroBatcher

    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    batcher = MicroBatcher(max_batch=max_batch, max_wait_ms=float("inf"), max_slots=max(16 * max_batch, 1024))
    for payload in payloads:
        slot = pipeline.accept(payload, "bench")
        batch = batcher.add(slot, slot.needs_scoring)
        if batch is not None:
            pipeline.complete(batch, pipeline.score(batch))
    batch = batcher.take()
    if batch is not None:
        pipeline.complete(batch, pipeline.score(batch))
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(profile))


# -- kafka section ---------------------------------------------------------------------------


@dataclass
class _Topics:
    input: str
    classification: str
    novelty: str
    dead_letter: str

    @classmethod
    def fresh(cls) -> _Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(f"e2e-in-{tag}", f"e2e-cls-{tag}", f"e2e-nov-{tag}", f"e2e-dlq-{tag}")

    def all(self) -> list[str]:
        return [self.input, self.classification, self.novelty, self.dead_letter]


def _kafka_section(archive: Path, args: argparse.Namespace, stack: ExitStack) -> tuple[list[list], dict]:
    """Each variant's daemon on its own topics, filled with the same alerts; the bare loop once."""
    from broker_filter_proving.local_kafka import LocalKafka

    cores = {int(c) for c in args.cores.split(",")}
    payloads = _payloads(archive)
    bootstrap = args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap
    rows: list[list] = []
    results: dict[str, dict] = {}
    bare_rate: float | None = None
    for variant in _variants(args):
        variant_rows, result, bare_rate = _kafka_variant(bootstrap, payloads, args, cores, variant, bare_rate, stack)
        rows += variant_rows
        results[variant] = result
    first = next(iter(results.values()))
    extra = {"bare_rate": bare_rate, "sustained_rate": first["sustained_rate"], "ratio": first["sustained_rate"] / bare_rate,
             "variants": results, "warmup": args.warmup, "messages": args.messages, "cores": sorted(cores)}
    if set(results) == set(VARIANTS):
        extra["current_over_baseline"] = results["current"]["sustained_rate"] / results["baseline"]["sustained_rate"]
    return rows, extra


def _kafka_variant(
    bootstrap: str, payloads: list[bytes], args: argparse.Namespace, cores: set[int], variant: str,
    bare_rate: float | None, stack: ExitStack,
) -> tuple[list[list], dict, float]:
    from broker_filter.streams.kafka_admin import delete_topics, ensure_topics

    label = VARIANT_LABELS[variant]
    topics = _Topics.fresh()
    ensure_topics(bootstrap, {name: 2 for name in topics.all()})
    rows: list[list] = []
    try:
        stream = itertools.cycle(payloads)  # observation-time order, as a survey sends them
        warmup = list(itertools.islice(stream, args.warmup))
        sustained = list(itertools.islice(stream, args.messages))
        _produce(bootstrap, topics.input, warmup + sustained)
        if bare_rate is None:
            bare_rate = _bare_consume_decode(bootstrap, topics.input, len(warmup) + len(sustained), cores)
            rows.append(["kafka", f"bare consume + fastavro decode ({len(cores)} cores)", bare_rate, 1.0, "", "", ""])
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        with _DaemonProcess(bootstrap, topics, args, cores, workdir, variant) as daemon, _OutputReader(bootstrap, topics.classification) as outputs:
            done = len(warmup) + len(sustained)
            arrivals = outputs.wait_for(done, timeout=max(600.0, done / 2.0), alive=daemon.alive)
            rate = _sustained_rate(arrivals[len(warmup):])
            scored = {"sustained": outputs.scored_fraction(len(warmup), done)}
            rows.append(["kafka", f"daemon sustained ({len(cores)} cores, exactly-once), {label}", rate, rate / bare_rate, "", "", ""])
            latency = {}
            for fraction in (0.5, 0.9):  # new alerts, continuing the stream
                count = max(1, int(rate * fraction * args.paced_seconds))
                start = outputs.received
                _produce(bootstrap, topics.input, list(itertools.islice(stream, count)), rate=rate * fraction)
                outputs.wait_for(start + count, timeout=args.paced_seconds * 10 + 120, alive=daemon.alive)
                lat = np.array(outputs.latencies_ms[start : start + count])
                p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
                share = f"{int(fraction * 100)}%"
                latency[share] = {"p50_ms": p50, "p99_ms": p99, "alerts": count}
                scored[share] = outputs.scored_fraction(start, start + count)
                rows.append(["kafka", f"latency at {share} of sustained ({rate * fraction:,.0f}/s), {label}",
                             rate * fraction, fraction * rate / bare_rate, p50, p99, ""])
        notes = ", ".join(f"{phase} {part:.0%}" for phase, part in scored.items())
        rows.append(["kafka", f"alerts scored by the model (rest below minimum), {label}: {notes}", "", "", "", "", ""])
        return rows, {"sustained_rate": rate, "ratio": rate / bare_rate, "latency": latency, "scored_fraction": scored}, bare_rate
    finally:
        delete_topics(bootstrap, topics.all())


def _produce(bootstrap: str, topic: str, payloads: Sequence[bytes], rate: float | None = None) -> None:
    """Produce (paced at ``rate`` messages/s when given); message timestamps are the produce times."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        if rate:
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"could not deliver every benchmark alert to {topic}")


def _bare_consume_decode(bootstrap: str, topic: str, count: int, cores: set[int]) -> float:
    """alerts/s of a bare consume + ``fastavro.reader`` loop on ``cores``, from its first message."""
    code = (
        "import io, json, os, sys, time, uuid, fastavro\n"
        "from confluent_kafka import Consumer\n"
        "bootstrap, topic, count, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])\n"
        "c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'bare-' + uuid.uuid4().hex, 'auto.offset.reset': 'earliest',\n"
        "              'enable.auto.commit': False, 'isolation.level': 'read_committed', **settings})\n"
        "c.subscribe([topic]); n = 0; t0 = None\n"
        "while n < count:\n"
        "    for m in c.consume(min(500, count - n), 0.1):\n"
        "        if m.error() is None:\n"
        "            t0 = t0 or time.perf_counter()\n"
        "            for _ in fastavro.reader(io.BytesIO(m.value())): pass\n"
        "            n += 1\n"
        "print((n - 1) / (time.perf_counter() - t0)); c.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, bootstrap, topic, str(count), json.dumps(CONSUMER_SETTINGS)],
        capture_output=True, text=True, timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, cores), check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def daemon_main(argv: Sequence[str]) -> int:
    """``CONFIG VARIANT``: what ``broker-filter run --config CONFIG`` runs (the same Daemon and
    pipeline; no broker pre-flight, re-keying or metrics port), with ``VARIANT``'s periods, so
    that both variants start the same way."""
    config_path, variant = argv
    from broker_filter.config import load_config
    from broker_filter.daemon import Daemon
    from broker_filter.logging_setup import setup_logging
    from broker_filter.metrics import Metrics
    from broker_filter.pipeline import pipeline_from_config

    config = load_config(config_path)
    setup_logging(config.logging)
    metrics = Metrics()
    pipeline = with_variant(pipeline_from_config(config, metrics), variant)
    daemon = Daemon(config, pipeline, metrics)
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    finally:
        pipeline.inferencer.close()


class _DaemonProcess:
    """:func:`daemon_main` on a generated config, pinned to ``cores``; SIGTERM on exit."""

    def __init__(self, bootstrap: str, topics: _Topics, args: argparse.Namespace, cores: set[int], workdir: Path, variant: str) -> None:
        self.config = workdir / "e2e.toml"
        self.log = workdir / "daemon.log"
        tag = uuid.uuid4().hex[:8]
        self.config.write_text(
            "[kafka]\n"
            f'bootstrap_servers = "{bootstrap}"\ngroup_id = "e2e-{tag}"\ninput_topics = ["{topics.input}"]\n'
            f'classification_topic = "{topics.classification}"\nnovelty_topic = "{topics.novelty}"\n'
            f'dead_letter_topic = "{topics.dead_letter}"\ntransactional_id = "e2e-{tag}"\n'
            f"[state]\npath = {json.dumps(str(workdir / 'state.sqlite'))}\n"
            f"[inference]\nbundle = {json.dumps(args.model or '')}\ndevice = {json.dumps(args.device)}\nmax_batch = {args.max_batch}\n"
            "[metrics]\nport = 0\n"
        )
        self.cores = cores
        self.variant = variant
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> _DaemonProcess:
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from broker_filter_proving.bench.e2e import daemon_main; sys.exit(daemon_main(sys.argv[1:]))",
             str(self.config), self.variant],
            stdout=self._log_handle, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, self.cores),
        )
        return self

    def alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{tail}")

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()


class _OutputReader:
    """A ``read_committed`` consumer of the classification topic in a thread: arrival times and latencies."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"e2e-out-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "isolation.level": "read_committed", **CONSUMER_SETTINGS,
        })
        self.consumer.subscribe([topic])
        self.arrivals: list[float] = []
        self.latencies_ms: list[float] = []
        self.statuses: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    @property
    def received(self) -> int:
        return len(self.arrivals)

    def _read(self) -> None:
        from broker_filter.outputs import decode

        while not self._stop.is_set():
            for message in self.consumer.consume(500, 0.1):
                if message.error() is not None:
                    continue
                now = time.time()
                record = decode("classification", message.value())
                self.arrivals.append(now)
                self.statuses.append(record["status"])
                self.latencies_ms.append(now * 1000.0 - record["alert_timestamp_ms"])  # the producer sets it

    def scored_fraction(self, start: int, end: int) -> float:
        return self.statuses[start:end].count("scored") / max(end - start, 1)

    def wait_for(self, count: int, timeout: float, alive: Callable[[], None]) -> list[float]:
        deadline = time.monotonic() + timeout
        while self.received < count:
            alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.received} of {count} outputs arrived within {timeout:.0f} s")
            time.sleep(0.2)
        return self.arrivals[:count]

    def __enter__(self) -> _OutputReader:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()


def _sustained_rate(arrivals: list[float]) -> float:
    """Outputs/s between the 10th and 90th percentile arrivals (start-up and the last batch excluded)."""
    times = np.sort(np.asarray(arrivals))
    lo, hi = int(0.1 * len(times)), int(0.9 * len(times)) - 1
    return (hi - lo) / max(times[hi] - times[lo], 1e-9)


# -- state section ---------------------------------------------------------------------------


def _state_section(sizes: list[int], points: int) -> list[list]:
    """One fresh process per size (so that memory freed by a smaller store is not re-used and
    missed): fill a store with that many objects, measure resident memory per object, then
    time merge + decision of alerts for random held objects, the current merge against the
    one it replaced; and the period memo's resident memory per object (two bands each)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for size in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
            per_object, rates, memo_per_object = pool.submit(_state_rates, size, points).result()
        for variant, rate in rates.items():
            rows.append(["state", f"{size:,} objects held, {variant}", rate, rate / rates["previous merge"], "", "", per_object])
        rows.append(["state", f"{size:,} objects held, period memo (2 bands each)", "", "", "", "", memo_per_object])
    return rows


def _state_rates(size: int, points: int) -> tuple[float, dict[str, float], float]:
    import psutil

    from broker_filter.periods import PeriodMemo, _Entry
    from broker_filter.scoring import ScoringPolicy
    from broker_filter.state import LightCurveStore
    from broker_filter.model.features import PreprocessConfig

    process = psutil.Process()
    policy = ScoringPolicy(min_points=20, min_interval_s=0.0, bands=("g", "r"), n_min=20)
    store = LightCurveStore(None, max_points_per_object=2000, max_objects=2 * size)
    gc.collect()
    before = process.memory_info().rss
    for index in range(size):  # what merging each object's first alert leaves, built directly (10^6 in seconds)
        store._hold(_synthetic_state(index, points))
    gc.collect()
    per_object = (process.memory_info().rss - before) / size  # resident memory: what an operator provisions
    newest = dict.fromkeys(range(size), points)  # each object's latest detection index
    rng = random.Random(0)
    rates = {}
    for variant, merge in (("previous merge", lambda alert: _merge_before(store, alert)), ("current merge", store.merge)):
        alerts = []
        for index in (rng.randrange(size) for _ in range(2000)):  # one new detection + the history held
            newest[index] += 1
            alerts.append(_synthetic_alert(index, newest[index], points))
        started = time.perf_counter()
        for alert in alerts:
            result = merge(alert)
            policy.decide(result.state, alert.time)
        rates[variant] = len(alerts) / (time.perf_counter() - started)
    memo = PeriodMemo(PreprocessConfig(), max_objects=size)
    gc.collect()
    before = process.memory_info().rss
    for index in range(size):  # one entry per band, as after each object's first scoring (built directly)
        for band in "gr":
            memo._store(f"obj{index}", band, _Entry(index.to_bytes(16, "little"), 0.5 + index * 1e-6))
    gc.collect()
    return per_object, rates, (process.memory_info().rss - before) / size


def _synthetic_state(index: int, n_history: int):
    """The state ``_synthetic_alert(index, n_history, n_history)`` merged into an empty store leaves."""
    from broker_filter.state import BandSeries, ObjectState

    state = ObjectState(f"obj{index}", "ztf")
    base = (index + 1) * 1_000_000
    for offset, band in enumerate("gr"):
        k = np.arange(offset, n_history + 1, 2)
        state.bands[band] = BandSeries(base + k, 58000.0 + index * 1e-3 + k * 0.7, 15.0 + 0.1 * np.sin(k), np.full(k.size, 0.02))
    state.last_seen = float(max(series.time[-1] for series in state.bands.values()))
    return state


def _synthetic_alert(index: int, n_history: int, window: int):
    """Alert ``n_history`` of object ``index``: the new detection plus the ``window`` before it, two bands."""
    from broker_filter.streams.alert import Alert, Detection

    first = max(0, n_history - window)
    base = (index + 1) * 1_000_000
    detections = tuple(
        Detection(base + k, 58000.0 + index * 1e-3 + k * 0.7, "gr"[k % 2], 15.0 + 0.1 * np.sin(k), 0.02)
        for k in range(first, n_history + 1)
    )
    return Alert(f"obj{index}", base + n_history, "ztf", "4.02", base + n_history, detections)


def _merge_before(store, alert):
    """The merge as it was before the profile-driven fix (``np.isin``, no early return);
    kept here only as the measured baseline. Same bookkeeping as ``LightCurveStore.merge``."""
    from broker_filter.state import BandSeries, MergeResult, _usable_by_band

    state = store._get_or_create(alert.object_id, alert.survey)
    before = state.n_points
    added = 0
    for band, (ids, times, mag, err) in _usable_by_band(alert.detections).items():
        series, fresh = _merged_before(state.bands.get(band, BandSeries.empty()), ids, times, mag, err)
        state.bands[band] = series
        added += fresh
    if added:
        state.last_seen = max(state.last_seen, max(s.time[-1] for s in state.bands.values()))
        state.trim(store.max_points_per_object)
        store._dirty.add(state.object_id)
    store._points += state.n_points - before
    store._objects.move_to_end(state.object_id)
    store._evict_beyond_bound()
    return MergeResult(state, added)


def _merged_before(series, ids, times, mag, mag_err):
    from broker_filter.state import BandSeries

    fresh = ~np.isin(ids, series.ids)
    ids, first = np.unique(ids[fresh], return_index=True)
    if ids.size == 0:
        return series, 0
    idx = np.flatnonzero(fresh)[first]
    all_ids = np.concatenate([series.ids, ids])
    all_time = np.concatenate([series.time, times[idx]])
    order = np.lexsort((all_ids, all_time))
    merged = BandSeries(all_ids[order], all_time[order], np.concatenate([series.mag, mag[idx]])[order],
                        np.concatenate([series.mag_err, mag_err[idx]])[order])
    return merged, int(ids.size)
