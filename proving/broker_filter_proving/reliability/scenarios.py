"""The failure scenarios of issue 6, each ending in an :class:`Outcome` row of the reliability table.

* :func:`crash_run`: ``kill -9`` the daemon at random moments while it works through a
  labelled stream, restart it each time, then check with ``read_committed`` that every
  input has exactly one output and that records and saved state equal an uninterrupted run's;
* :func:`broker_restart_run`: stop the broker (SIGTERM or SIGKILL) under a running daemon
  and start it again; the daemon must recover on its own, losing and duplicating nothing;
* :func:`overload_run`: feed input at a multiple of the measured processing rate; the
  daemon must pause its partitions, keep its resident memory under a bound, and drain.

The uninterrupted reference is the archive driver (:func:`broker_filter.replay.replay`) on
the same alerts with the same configuration: the daemon's tests prove that the Kafka path
writes the same records as the replay, so any difference here comes from the failure.
"""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker_filter_proving import REPO
from broker_filter_proving.reliability.bad_input import strip
from broker_filter_proving.reliability.harness import (
    Accounting,
    READ_TIMEOUT_S,
    DaemonProcess,
    Deployment,
    OutputWatcher,
    account,
    origin,
    produce,
    scrape,
    write_config,
)

#: Small batches commit often, so that a kill lands between, inside and across transactions.
DAEMON_SECTIONS: dict[str, dict[str, Any]] = {
    "scoring": {"min_points": 20},
    "inference": {"max_batch": 64, "max_wait_ms": 100.0, "queue_max": 512, "device": "cpu", "mixed_precision": False},
}
GARBAGE_SIZE = 512
FLOAT_RTOL = 1e-5
LAG_SETTLE_S = 7.0  # the daemon refreshes its consumer_lag gauge every 5 s


@dataclass(frozen=True)
class Stream:
    """Input messages in the order they are sent; ``record_ids[i]`` is None for a message that must be dead-lettered."""

    archive: Path
    payloads: list[bytes]
    keys: list[bytes | None]
    record_ids: list[str | None]

    def __len__(self) -> int:
        return len(self.payloads)


@dataclass
class Outcome:
    """One row of docs/RELIABILITY.md's table."""

    scenario: str
    runs: int
    inputs: int
    outputs: int
    lost: int
    duplicated: int
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return f"| {self.scenario} | {self.runs} | {self.inputs:,} | {self.outputs:,} | {self.lost} | {self.duplicated} | {verdict} |"


def labelled_stream(out_dir: Path, *, objects: int, seed: int, garbage_every: int = 0,
                    classes: tuple[str, ...] = ("RRab", "RRc", "SNIa")) -> Stream:
    """Simulated labelled ZTF alerts in time order (keyed by object id), with a garbage message every ``garbage_every``."""
    from broker_filter.streams.archive import iter_archive
    from broker_filter.streams.simulate import SimulationConfig, simulate

    archive = out_dir / "alerts"
    simulate(REPO / "data" / "lightcurves", archive,
             SimulationConfig(survey="ztf", max_objects=objects, classes=classes, seed=seed))
    rng = random.Random(seed)
    payloads, keys, ids = [], [], []
    for k, item in enumerate(iter_archive([archive], order="time")):
        if garbage_every and k % garbage_every == garbage_every - 1:
            payloads.append(rng.randbytes(GARBAGE_SIZE))
            keys.append(None)
            ids.append(None)
        alert = item.alert
        payloads.append(item.payload)
        keys.append(alert.object_id.encode())
        ids.append(f"{alert.survey}:{alert.object_id}:{alert.alert_id}")
    return Stream(archive, payloads, keys, ids)


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run: records by id (run-dependent fields removed) and its state file."""

    records: dict[str, dict[str, Any]]
    state_path: Path
    seconds: float


def reference_run(stream: Stream, out_dir: Path, inferencer, sections: Mapping[str, Mapping[str, Any]] = DAEMON_SECTIONS) -> Reference:
    """The archive driver over the stream's alerts with the daemon's scoring and state settings."""
    import json

    from broker_filter.config import config_from_mapping
    from broker_filter.metrics import Metrics
    from broker_filter.pipeline import pipeline_from_config
    from broker_filter.replay import replay

    state_path = out_dir / "reference-state.sqlite"
    raw = {name: dict(values) for name, values in sections.items()}
    raw["state"] = {**raw.get("state", {}), "path": str(state_path)}
    raw["metrics"] = {"port": 0}
    config = config_from_mapping(raw, {})
    pipeline = pipeline_from_config(config, Metrics(), inferencer)
    started = time.perf_counter()
    replay([stream.archive], out_dir / "reference", pipeline, max_batch=config.inference.max_batch, progress=False)
    pipeline.store.close()
    lines = (out_dir / "reference" / "classifications.jsonl").read_text().splitlines()
    records = {r["record_id"]: strip(r) for r in map(json.loads, lines)}
    return Reference(records, state_path, time.perf_counter() - started)


def read_state(path: Path) -> dict[str, Any]:
    """The state file's content, read with plain SQL (format of :mod:`broker_filter.state`), for comparison."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        objects = {row[0]: row[1:] for row in db.execute("SELECT object_id, survey, last_seen, scored FROM objects")}
        series = {(row[0], row[1]): row[2:] for row in db.execute("SELECT object_id, band, ids, time, mag, mag_err FROM series")}
    return {"objects": objects, "series": series}


def compare(reference: Reference, records: list[dict[str, Any]], state_path: Path | None) -> list[str]:
    """Differences from the uninterrupted run (empty when equal)."""
    problems = []
    got = {r["record_id"]: strip(r) for r in records}
    differing = sorted(k for k in reference.records.keys() & got.keys() if not _same(reference.records[k], got[k]))
    if differing:
        problems.append(f"{len(differing)} records differ from the uninterrupted run's, e.g. {differing[0]}: "
                        f"{_diff(reference.records[differing[0]], got[differing[0]])}")
    if reference.records.keys() != got.keys():
        problems.append(f"record ids differ: {len(reference.records.keys() - got.keys())} missing, {len(got.keys() - reference.records.keys())} extra")
    if state_path is not None:
        expected, actual = read_state(reference.state_path), read_state(state_path)
        for table in ("objects", "series"):
            differ = sorted(k for k in expected[table].keys() | actual[table].keys() if expected[table].get(k) != actual[table].get(k))
            if differ:
                problems.append(f"state table {table}: {len(differ)} rows differ from the uninterrupted run's, e.g. {differ[0]}")
    return problems


def _same(expected: Any, got: Any) -> bool:
    """Equal, floats within ``FLOAT_RTOL``: the model runs in float32, and a batched matrix
    product rounds differently with the batch's composition, which differs between the
    uninterrupted replay and a daemon whose batches a kill cut short (last digits only)."""
    if isinstance(expected, float) and isinstance(got, float):
        return math.isclose(expected, got, rel_tol=FLOAT_RTOL, abs_tol=FLOAT_RTOL)
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(_same(expected[k], got[k]) for k in expected)
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(_same(e, g) for e, g in zip(expected, got))
    return expected == got


def _diff(expected: dict[str, Any], got: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {expected.get(k)!r} != {got.get(k)!r}" for k in sorted(expected.keys() | got.keys()) if not _same(expected.get(k), got.get(k)))


def create_topics(deployment: Deployment, partitions: int, input_config: Mapping[str, str] | None = None) -> None:
    from broker_filter.streams.kafka_admin import ensure_topics

    ensure_topics(deployment.bootstrap, {deployment.input_topic: partitions}, client=deployment.client, config=input_config)
    ensure_topics(deployment.bootstrap, {t: partitions for t in deployment.output_topics}, client=deployment.client)


def send(deployment: Deployment, stream: Stream, rate: float | None = None) -> list[str]:
    """Produce the stream; returns the dead-letter origins expected for its garbage messages."""
    positions = produce(deployment.bootstrap, deployment.input_topic, stream.payloads, stream.keys, deployment.client, rate=rate)
    return [origin(deployment.input_topic, p, o) for (p, o), rid in zip(positions, stream.record_ids) if rid is None]


def _verdict(name: str, runs: int, stream: Stream, accounting: Accounting, problems: list[str], details: dict[str, Any]) -> Outcome:
    details = {**details, "accounting": accounting.summary(), "problems": problems[:5]}
    if not accounting.ok:
        details["lost_examples"], details["duplicated_examples"] = accounting.lost[:5], accounting.duplicated[:5]
        details["unexpected_examples"] = accounting.unexpected[:5]
    return Outcome(name, runs, len(stream), accounting.records + accounting.dead_letters, len(accounting.lost),
                   len(accounting.duplicated), accounting.ok and not problems, details)


# -- crash ------------------------------------------------------------------------------------


def crash_run(deployment: Deployment, stream: Stream, reference: Reference, workdir: Path, *, kills: int, seed: int,
              partitions: int = 2, sections: Mapping[str, Mapping[str, Any]] = DAEMON_SECTIONS,
              on_kill: Callable[[int, dict[str, Any]], None] | None = None) -> Outcome:
    """``kills`` SIGKILLs at random moments, then one clean run to the end; see the module docstring.

    The stream is sent in ``kills + 1`` parts, part ``k`` before incarnation ``k`` starts and
    the last before the clean run: every kill lands before the end of the stream however
    fast an incarnation is (sent all at once, a fast incarnation's first commit could hold
    the rest of the stream, and its kill came after the end).
    """
    rng = random.Random(seed)
    create_topics(deployment, partitions)
    total = len(stream)
    parts = _parts(stream, kills + 1)
    expected_dead: list[str] = []
    state_path = workdir / "state.sqlite"
    config = write_config(workdir / "daemon.toml", deployment, state={"path": str(state_path)}, metrics={"port": 0},
                          **{k: v for k, v in sections.items() if k != "state"})
    kill_log: list[dict[str, Any]] = []
    started = time.monotonic()
    with OutputWatcher(deployment) as watcher:
        for k in range(kills):
            expected_dead += send(deployment, parts[k])
            daemon = DaemonProcess(config, workdir / "daemon.log").start()
            moment = _kill_moment(rng, watcher, daemon, total)
            accounted_before_kill = watcher.accounted()
            daemon.kill()
            kill_log.append({"after_s": round(moment, 2), "accounted": accounted_before_kill})
            if on_kill is not None:
                on_kill(k, kill_log[-1])
        expected_dead += send(deployment, parts[-1])
        daemon = DaemonProcess(config, workdir / "daemon.log").start()
        try:
            watcher.wait_for(total, alive=daemon.alive)
        finally:
            status = daemon.terminate()
        messages = watcher.messages()
    accounting, records = account(deployment, messages, [r for r in stream.record_ids if r], expected_dead)
    problems = compare(reference, records, state_path)
    if status != 0:
        problems.append(f"the final run exited with {status} after SIGTERM (0 expected)")
    effective = sum(1 for entry in kill_log if entry["accounted"] < total)
    details = {"kills": len(kill_log), "kills_mid_stream": effective, "seconds": round(time.monotonic() - started, 1),
               "kill_log": kill_log, "log": str(workdir / "daemon.log")}
    return _verdict("kill -9 of the daemon", len(kill_log), stream, accounting, problems, details)


def _kill_moment(rng: random.Random, watcher: OutputWatcher, daemon: DaemonProcess, total: int) -> float:
    """Sleep until a random moment of this incarnation; returns its age in seconds.

    One time in five: at any time in its first 4 s (start-up, group join,
    ``init_transactions`` fencing the previous incarnation), or at its first output if that
    comes sooner: a fast incarnation would otherwise finish the stream inside the window, and
    the "start-up" kill would land after the end. Otherwise once it is consuming
    (its log says its partitions were assigned) and has committed its first transaction,
    plus up to 0.5 s: inside or between the transactions that follow. Waiting for a commit
    makes every such incarnation advance the stream, and the kill land while it works;
    timing from its birth instead would, on a slow machine, kill every incarnation while it
    is still importing its libraries.
    """
    born = time.monotonic()
    if rng.random() < 0.2:
        deadline, before = born + rng.uniform(0.0, 4.0), watcher.accounted()
        _await(lambda: time.monotonic() >= deadline or watcher.accounted() > before, daemon, READ_TIMEOUT_S)
    else:
        _await(lambda: daemon.logged(ASSIGNED_MARK), daemon, READ_TIMEOUT_S)
        before = watcher.accounted()
        _await(lambda: watcher.accounted() > before or watcher.accounted() >= total, daemon, READ_TIMEOUT_S)
        time.sleep(rng.uniform(0.0, 0.5))
    if not daemon.alive():
        raise RuntimeError(f"the daemon exited on its own (status {daemon.process.returncode}):\n{daemon.log_tail()}")
    return time.monotonic() - born


ASSIGNED_MARK = "assigned "  # broker_filter.daemon logs it when the group hands it partitions


# -- broker restart ------------------------------------------------------------------------------


def broker_restart_run(broker, deployment: Deployment, stream: Stream, reference: Reference, workdir: Path, *,
                       stops: Sequence[str], seed: int, downtime_s: float = 3.0, partitions: int = 2,
                       sections: Mapping[str, Mapping[str, Any]] = DAEMON_SECTIONS,
                       on_stop: Callable[[int, dict[str, Any]], None] | None = None) -> Outcome:
    """Stop the broker under one running daemon once per entry of ``stops`` ("SIGTERM" or "SIGKILL").

    The stream is sent in ``len(stops) + 1`` parts, the next one only once the broker is back:
    stop ``k`` comes when a random share of part ``k`` is accounted for, so it lands
    mid-stream however fast the daemon is (sent all at once, a daemon that prefetched the
    whole stream finished it in one burst after the first restart, and the next "mid-stream"
    stop came after the end). The broker stays down ``downtime_s`` and is started again on
    the same ports and data. The daemon is never restarted: it must recover by itself.
    """
    unknown = set(stops) - {"SIGTERM", "SIGKILL"}
    if unknown:
        raise ValueError(f"stops must be SIGTERM or SIGKILL, not {sorted(unknown)}")
    rng = random.Random(seed)
    create_topics(deployment, partitions)
    config = write_config(workdir / "daemon.toml", deployment, state={"path": str(workdir / "state.sqlite")}, metrics={"port": 0},
                          **{k: v for k, v in sections.items() if k != "state"})
    total = len(stream)
    parts = _parts(stream, len(stops) + 1)
    starts = [0, *itertools.accumulate(len(part) for part in parts)]
    targets = [int(starts[k] + rng.uniform(0.3, 0.9) * len(parts[k])) for k in range(len(stops))]
    stop_log: list[dict[str, Any]] = []
    expected_dead: list[str] = []
    started = time.monotonic()
    with OutputWatcher(deployment) as watcher:
        daemon = DaemonProcess(config, workdir / "daemon.log").start()
        try:
            for k, (how, target) in enumerate(zip(stops, targets)):
                expected_dead += send(deployment, parts[k])
                _await(lambda: watcher.accounted() >= target, daemon, READ_TIMEOUT_S)
                entry = {"signal": how, "accounted_at_stop": watcher.accounted()}
                broker.stop(kill=how == "SIGKILL")
                time.sleep(downtime_s)
                began = time.monotonic()
                broker.start()
                entry["broker_start_s"] = round(time.monotonic() - began, 1)
                stop_log.append(entry)
                if on_stop is not None:
                    on_stop(k, entry)
            expected_dead += send(deployment, parts[-1])
            watcher.wait_for(total, alive=daemon.alive)
        finally:
            status = daemon.terminate()
        messages = watcher.messages()
    accounting, records = account(deployment, messages, [r for r in stream.record_ids if r], expected_dead)
    problems = compare(reference, records, None)
    if status != 0:
        problems.append(f"the daemon exited with {status} after SIGTERM (0 expected): it did not recover by itself")
    mid_stream = sum(1 for entry in stop_log if entry["accounted_at_stop"] < total)
    if mid_stream < len(stops):
        problems.append(f"only {mid_stream} of {len(stops)} broker stops came before the end of the stream")
    counts = {how: list(stops).count(how) for how in ("SIGTERM", "SIGKILL")}
    details = {"stops": stop_log, "stops_mid_stream": mid_stream, "downtime_s": downtime_s,
               "seconds": round(time.monotonic() - started, 1), "log": str(workdir / "daemon.log")}
    name = "broker restart (" + ", ".join(f"{n} {how}" for how, n in counts.items() if n) + ")"
    return _verdict(name, len(stops), stream, accounting, problems, details)


# -- overload -------------------------------------------------------------------------------------


def overload_run(deployment: Deployment, stream: Stream, workdir: Path, *, factor: float, seconds: float, rss_limit_mb: float,
                 calibration: int, partitions: int = 2, sections: Mapping[str, Mapping[str, Any]] = DAEMON_SECTIONS,
                 metrics_port: int) -> Outcome:
    """Measure the processing rate on the first ``calibration`` alerts (over their second half),
    then send the rest at ``factor`` times it.

    The overload lasts ``seconds`` if the stream is long enough (else what the stream allows,
    reported as a problem). Every 0.5 s the daemon's resident memory, queue depth, paused
    partitions and consumer lag are sampled; the lag must come back to 0 and every input
    must be accounted for (``read_committed``) once the input stops.
    """
    import psutil

    create_topics(deployment, partitions)
    config = write_config(workdir / "daemon.toml", deployment, state={"path": str(workdir / "state.sqlite")},
                          metrics={"host": "127.0.0.1", "port": metrics_port}, **{k: v for k, v in sections.items() if k != "state"})
    head = _slice(stream, 0, calibration)
    samples: list[dict[str, float]] = []
    with OutputWatcher(deployment) as watcher:
        daemon = DaemonProcess(config, workdir / "daemon.log").start()
        try:
            expected_dead = send(deployment, head)
            # the rate over the calibration's second half: the first alerts of a stream are young
            # objects below the minimum, processed several times faster than the mature ones after
            watcher.wait_for(calibration // 2, alive=daemon.alive, linger=0.0)
            t0, n0 = time.monotonic(), watcher.accounted()
            watcher.wait_for(calibration, alive=daemon.alive, linger=0.0)
            rate = (calibration - n0) / (time.monotonic() - t0)
            send_rate = factor * rate
            count = min(len(stream) - calibration, int(send_rate * seconds))
            tail = _slice(stream, calibration, calibration + count)
            sampler = _Sampler(psutil.Process(daemon.pid), metrics_port, samples).start()
            sent_at = time.monotonic()
            expected_dead += send(deployment, tail, rate=send_rate)
            overload_s = time.monotonic() - sent_at
            # the backlog drains at about the processing rate; allow six times that
            watcher.wait_for(calibration + count, timeout=max(READ_TIMEOUT_S, 6 * count / rate), alive=daemon.alive)
            drained_s = time.monotonic() - sent_at - overload_s
            time.sleep(LAG_SETTLE_S)
            sampler.stop()
        finally:
            status = daemon.terminate()
        messages = watcher.messages()
    sent = _slice(stream, 0, calibration + count)
    accounting, _ = account(deployment, messages, [r for r in sent.record_ids if r], expected_dead)
    return _verdict(f"overload ({factor:g}x the processing rate)", 1, sent, accounting,
                    _overload_problems(samples, rss_limit_mb, status, overload_s, seconds),
                    {"processing_rate_per_s": round(rate, 1), "send_rate_per_s": round(send_rate, 1), "overload_s": round(overload_s, 1),
                     "drain_s": round(drained_s, 1), "peak_rss_mb": round(max(s["rss_mb"] for s in samples)), "rss_limit_mb": rss_limit_mb,
                     "rss_at_start_of_overload_mb": round(samples[0]["rss_mb"]),
                     "max_queue_depth": max(s["queue_depth"] for s in samples), "queue_max": sections["inference"]["queue_max"],
                     "max_partitions_paused": max(s["paused"] for s in samples), "max_lag": max(s["lag"] for s in samples),
                     "final_lag": samples[-1]["lag"], "samples": len(samples), "log": str(workdir / "daemon.log")})


def _parts(stream: Stream, count: int) -> list[Stream]:
    """``stream`` cut into ``count`` consecutive parts of near-equal length: sent one by one
    around each failure, so that every failure lands before the end of the stream."""
    bounds = [round(len(stream) * k / count) for k in range(count + 1)]
    return [_slice(stream, bounds[k], bounds[k + 1]) for k in range(count)]


def _slice(stream: Stream, start: int, end: int) -> Stream:
    return Stream(stream.archive, stream.payloads[start:end], stream.keys[start:end], stream.record_ids[start:end])


def _overload_problems(samples: list[dict[str, float]], rss_limit_mb: float, status: int, overload_s: float, seconds: float) -> list[str]:
    problems = []
    peak_rss = max(s["rss_mb"] for s in samples)
    if peak_rss > rss_limit_mb:
        problems.append(f"peak RSS {peak_rss:.0f} MB over the bound {rss_limit_mb:.0f} MB")
    if max(s["paused"] for s in samples) == 0:
        problems.append("partitions were never paused: the input did not outrun the daemon")
    if samples[-1]["lag"] != 0:
        problems.append(f"consumer lag {samples[-1]['lag']:.0f} after the drain (0 expected)")
    if overload_s < 0.9 * seconds:
        problems.append(f"the stream allowed {overload_s:.0f} s of overload, not {seconds:.0f} s: simulate more objects")
    if status != 0:
        problems.append(f"the daemon exited with {status} after SIGTERM")
    return problems


def _await(condition: Callable[[], bool], daemon: DaemonProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited:\n{daemon.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no progress within {timeout:.0f} s:\n{daemon.log_tail()}")
        time.sleep(0.1)


class _Sampler:
    """Every 0.5 s: the daemon's resident memory (all its threads), its queue and pause gauges and its total lag."""

    def __init__(self, process, metrics_port: int, samples: list[dict[str, float]]) -> None:
        import threading

        self.process, self.port, self.samples = process, metrics_port, samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            metrics = scrape("127.0.0.1", self.port)
            self.samples.append({
                "rss_mb": self.process.memory_info().rss / 2**20,
                "queue_depth": metrics.get("broker_filter_inference_queue_depth", 0.0),
                "paused": metrics.get("broker_filter_partitions_paused", 0.0),
                "lag": sum(v for k, v in metrics.items() if k.startswith("broker_filter_consumer_lag{")),
            })
            self._stop.wait(0.5)
