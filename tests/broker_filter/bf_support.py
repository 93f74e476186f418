"""Helpers for the daemon's tests (the fixtures are in conftest.py): stream, config, Kafka I/O, checks."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from broker_filter.config import Config, config_from_mapping
from broker_filter.streams.archive import iter_archive

REPO = Path(__file__).resolve().parents[2]
LIGHTCURVES = REPO / "data" / "lightcurves"
#: Real ASAS-3 stars of six classes (RRAB, ECL, CEPH, DSCT, M and the novel RCB), each cut to
#: its first WINDOW_DAYS of observations: a few hundred alerts, and baselines short enough
#: that period estimation on two CPU cores keeps the whole suite within minutes.
STREAM_STARS = ("asas3_215929", "asas3_216981", "asas3_217215", "asas3_221118", "asas3_216354", "asas3_244506")
WINDOW_DAYS = 150.0
MIN_POINTS = 20
#: Fields that legitimately differ between two runs over the same alerts.
RUN_DEPENDENT = ("processed_at_ms", "alert_timestamp_ms")


@dataclass(frozen=True)
class Stream:
    """A simulated labelled archive: its folder, items (payloads in time order) and labels."""

    path: Path
    payloads: list[bytes]
    object_ids: list[str]
    alert_ids: list[int]


def stream_lightcurves(out: Path) -> Path:
    """``data/lightcurves`` reduced to :data:`STREAM_STARS` within their first :data:`WINDOW_DAYS`."""
    import pandas as pd

    observations = pd.read_parquet(LIGHTCURVES / "lightcurves.parquet")
    objects = pd.read_csv(LIGHTCURVES / "objects.csv", dtype={"object_id": str})
    observations = observations[observations["object_id"].isin(STREAM_STARS)]
    start = observations.groupby("object_id")["time"].transform("min")
    out.mkdir(parents=True, exist_ok=True)
    observations[observations["time"] < start + WINDOW_DAYS].to_parquet(out / "lightcurves.parquet")
    objects[objects["object_id"].isin(STREAM_STARS)].to_csv(out / "objects.csv", index=False)
    return out


def make_config(**sections) -> Config:
    """Test defaults (small batches, in-memory state, no metrics port), environment, then ``sections``."""
    raw = {
        "scoring": {"min_points": MIN_POINTS},
        "inference": {"max_batch": 256, "max_wait_ms": 50.0, "queue_max": 2048, "device": "cpu"},
        "state": {"path": ""},
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_mapping(raw, os.environ)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def comparable(records: Iterable[dict]) -> dict[str, dict]:
    """Records by record_id without their run-dependent fields (and each id exactly once)."""
    by_id: dict[str, dict] = {}
    for record in records:
        assert record["record_id"] not in by_id, f"duplicate record {record['record_id']}"
        by_id[record["record_id"]] = {k: v for k, v in record.items() if k not in RUN_DEPENDENT}
    return by_id


def assert_same_records(records: Iterable[dict], reference: Iterable[dict]) -> None:
    """One record per id on both sides, equal field by field; floats equal to fp32 round-off.

    Model outputs are float32 sums whose rounding depends on what else shares the batch
    (padding width, BLAS blocking), and the two drivers batch differently, so scores agree
    to ~1e-7 rather than bit for bit. Everything else (statuses, classes, flags, counts,
    ids) must be identical.
    """
    ours, theirs = comparable(records), comparable(reference)
    assert ours.keys() == theirs.keys(), f"{len(ours.keys() - theirs.keys())} extra, {len(theirs.keys() - ours.keys())} missing"
    for record_id, record in ours.items():
        _assert_close(record, theirs[record_id], record_id)


def _assert_close(a, b, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def produce(bootstrap: str, topic: str, payloads: Iterable[bytes], keys: Iterable[bytes | None] | None = None) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    payloads = list(payloads)
    keys = list(keys) if keys is not None else [None] * len(payloads)
    for payload, key in zip(payloads, keys, strict=True):
        producer.produce(topic, payload, key)
        producer.poll(0)
    assert producer.flush(30) == 0


def consume_all(
    bootstrap: str, topics: list[str], until: Callable[[list], bool], timeout: float = 120.0, linger: float = 1.0
) -> list:
    """Committed messages of ``topics`` (read_committed) until ``until(messages)`` or the timeout,
    then ``linger`` seconds more, so that a duplicate arriving after the last expected record is seen."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(messages):
            messages.extend(m for m in consumer.consume(500, 0.5) if m.error() is None)
        settle = time.monotonic() + linger
        while time.monotonic() < settle:
            messages.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return messages


class DaemonThread:
    """A Daemon running in a thread of the test process; ``stop()`` is what SIGTERM does."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.status: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.status = self.daemon.run()
        except BaseException as error:  # noqa: BLE001 — surfaced by stop()
            self.error = error

    def __enter__(self) -> DaemonThread:
        self.thread.start()
        return self

    def stop(self) -> int | None:
        self.daemon.stop_requested.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "daemon did not stop within 120 s"
        if self.error is not None:
            raise self.error
        return self.status

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()


def kafka_section(bootstrap: str, names: dict[str, str], group: str, **extra) -> dict:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "input_topics": [names["input"]],
        "classification_topic": names["classification"],
        "novelty_topic": names["novelty"],
        "dead_letter_topic": names["dead_letter"],
        "transactional_id": f"{group}-txn",
        **extra,
    }


def assert_matches_offline(archive: Path, records: Iterable[dict], bundle) -> float:
    """Every scored record equals the reference ``bundle.score`` on the same light curves.

    The light curves are rebuilt here from the archive's detections (all alerts of the
    object, usable points observed up to the record's alert, the bands it used), without
    the daemon's state code or its period memo, folded with the periods of the serving
    rule (:func:`broker_filter.model.period_schedule.scheduled_periods`, no memo) and scored in one pass
    of the simple reference network (``bundle.chunk_outputs``).
    Returns the fraction of scorings flagged novel (equal, then, to the offline rate).
    """
    import numpy as np

    from broker_filter.model.data import LightCurve
    from broker_filter.model.features import prepare_batch
    from broker_filter.model.period_schedule import scheduled_periods
    from broker_filter.model.scores import combine_chunks, object_scores

    points: dict[tuple[str, str], dict[int, tuple[float, float, float]]] = {}
    for item in iter_archive([archive], order="file"):
        for det in item.alert.detections:
            if det.usable and not det.forced:
                points.setdefault((item.alert.object_id, det.band), {})[det.detection_id] = (det.time, det.mag, det.mag_err)
    scored = [r for r in records if r["status"] == "scored"]
    curves = []
    for record in scored:
        for band in record["bands_used"]:
            rows = np.array(sorted(v for v in points[(record["object_id"], band)].values() if v[0] <= record["alert_time_mjd"]))
            curves.append(LightCurve(record["record_id"], band, rows[:, 0], rows[:, 1], rows[:, 2]))
    batch = prepare_batch(curves, bundle.preprocess, scheduled_periods(curves, bundle.preprocess))
    log_probs, energies = bundle.chunk_outputs(batch)
    combined = combine_chunks([curves[i].object_id for i in batch.owner], log_probs, energies, batch.lengths)
    reference = {score.object_id: score for score in object_scores(combined, bundle.class_names, bundle.thresholds, bundle.calibration)}
    assert reference.keys() == {r["record_id"] for r in scored}
    for record in scored:
        expected = reference[record["record_id"]]
        assert expected.top_class == record["top_class"], record["record_id"]
        assert expected.n_points == record["n_points"]
        assert math.isclose(expected.energy, record["energy"], rel_tol=1e-4, abs_tol=1e-4)
        assert expected.novel[f"p{record['novelty_threshold_percentile']}"] == record["novel"]
        assert math.isclose(expected.p_value, record["novelty_p_value"], rel_tol=1e-6)
        for name, p in expected.probs.items():
            assert math.isclose(p, record["probabilities"][name], rel_tol=1e-4, abs_tol=1e-5)
    return sum(r["novel"] for r in scored) / max(len(scored), 1)
