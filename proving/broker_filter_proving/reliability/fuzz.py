"""Mutation fuzzing of the decoder and the light-curve state merge.

Each case takes a valid seed alert (:mod:`~broker_filter_proving.reliability.craft`) and breaks it
in one way, at one of four depths, so that every layer is reached:

==============  ============================================================================
depth           what is mutated
==============  ============================================================================
``container``   the whole one-record container file (magic, metadata, schema text, sync)
``block``       only the data block after the container header (the record's bytes)
``schemaless``  a bare record read with a configured writer schema (no framing to fail)
``record``      a field value (NaN, infinities, zero or negative errors, huge or negative
                ids and times, unknown bands, empty or duplicated history, missing fields),
                re-encoded validly: the converters' own checks are what is tested
==============  ============================================================================

The contracts checked on every case (a violation is a *failure*, reported with the case's
seed so that ``case(seed)`` reproduces it):

* :meth:`AlertDecoder.decode` returns an :class:`Alert` or raises :class:`DecodeError`
  with a reason from ``DecodeError.REASONS``, nothing else;
* a decoded alert keeps the contract of :mod:`broker_filter.streams.alert`: detections sorted by time,
  unique ids, the trigger among them, finite times;
* :meth:`LightCurveStore.merge` never raises, keeps every band sorted, unique, finite, with
  positive errors and within ``max_points_per_object``; merging the alert again adds
  nothing (idempotence, checked on a fresh store); the scoring policy decides on the
  result without raising.
"""

from __future__ import annotations

import math
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker_filter_proving.reliability.craft import (
    SeedAlerts,
    container,
    history_key,
    schemaless,
    trigger_key,
    without_field,
)
from broker_filter.scoring import ScoringPolicy
from broker_filter.state import LightCurveStore
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.codec import AlertDecoder

DEPTHS = ("container", "block", "schemaless", "record")
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-300, 1e300, -1e300, 3.4e38)
INTERESTING_INTS = (0, -1, 1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 7, 4)
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True)
class FuzzCase:
    """One mutated input: how it was made (for the report) and what to decode."""

    seed: int
    depth: str
    mutation: str
    payload: bytes
    schemaless_schema: dict[str, Any] | None = None


@dataclass
class FuzzFailure:
    seed: int
    depth: str
    mutation: str
    error: str


@dataclass
class FuzzReport:
    """Counts by outcome; ``failures`` are contract violations (must be empty)."""

    cases: int = 0
    decoded: int = 0
    merged_points: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    by_depth: Counter[str] = field(default_factory=Counter)
    failures: list[FuzzFailure] = field(default_factory=list)
    failure_count: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "decoded": self.decoded,
            "merged_points": self.merged_points,
            "rejected": dict(sorted(self.rejected.items())),
            "by_depth": dict(sorted(self.by_depth.items())),
            "failure_count": self.failure_count,
            "failures": [vars(f) for f in self.failures],
            "seconds": round(self.seconds, 1),
        }


class Fuzzer:
    """Generates cases from seed alerts and checks the contracts; see the module docstring."""

    def __init__(self, seeds: list[SeedAlerts], *, max_points_per_object: int = 300, min_points: int = 5) -> None:
        self.seeds = seeds
        self.containers = [[container(r, s.schema) for r in s.records] for s in seeds]
        self.schemaless_decoders = {s.survey: AlertDecoder(schema=s.schema) for s in seeds}
        self.decoder = AlertDecoder()
        self.store = LightCurveStore(None, max_points_per_object=max_points_per_object, max_objects=200)
        self.policy = ScoringPolicy(min_points, 0.0, (), 1)

    # -- generating ------------------------------------------------------------------

    def case(self, seed: int) -> FuzzCase:
        """The case of this seed (deterministic: a failure is reproduced from its seed)."""
        rng = random.Random(seed)
        which = rng.randrange(len(self.seeds))
        seeds = self.seeds[which]
        index = rng.randrange(len(seeds.records))
        depth = DEPTHS[seed % len(DEPTHS)]
        if depth == "record":
            mutation, payload = self._mutate_record(rng, seeds, index)
            return FuzzCase(seed, depth, mutation, payload)
        if depth == "schemaless":
            data = schemaless(seeds.records[index], seeds.schema)
            mutation, payload = mutate_bytes(rng, data, self._other_payload(rng))
            return FuzzCase(seed, depth, mutation, payload, seeds.schema)
        data = self.containers[which][index]
        if depth == "block":
            start = _header_end(data)
            mutation, body = mutate_bytes(rng, data[start:], self._other_payload(rng))
            return FuzzCase(seed, depth, mutation, data[:start] + body)
        mutation, payload = mutate_bytes(rng, data, self._other_payload(rng))
        return FuzzCase(seed, depth, mutation, payload)

    def _other_payload(self, rng: random.Random) -> bytes:
        payloads = self.containers[rng.randrange(len(self.containers))]
        return payloads[rng.randrange(len(payloads))]

    def _mutate_record(self, rng: random.Random, seeds: SeedAlerts, index: int) -> tuple[str, bytes]:
        """A mutated record that the Avro writer accepts (a value outside the field's Avro
        type, e.g. 2**40 for an ``int``, cannot travel on Kafka: another mutation is drawn)."""
        while True:
            record = seeds.record(index)
            name, mutate = rng.choice(RECORD_MUTATIONS)
            schema = mutate(rng, seeds, record, seeds.schema) or seeds.schema
            try:
                return name, container(record, schema)
            except (ValueError, TypeError, OverflowError, AttributeError):
                continue

    # -- checking --------------------------------------------------------------------

    def run(self, cases: int, base_seed: int = 0, progress: Callable[[int], None] | None = None) -> FuzzReport:
        report = FuzzReport()
        started = time.perf_counter()
        for k in range(cases):
            fuzz_case = self.case(base_seed + k)
            report.cases += 1
            report.by_depth[fuzz_case.depth] += 1
            try:
                outcome = self.check(fuzz_case)
            except Exception:  # noqa: BLE001 — any escape is the finding this harness exists for
                report.failure_count += 1
                if len(report.failures) < MAX_FAILURES_KEPT:
                    report.failures.append(FuzzFailure(fuzz_case.seed, fuzz_case.depth, fuzz_case.mutation, traceback.format_exc(limit=6)))
                continue
            if isinstance(outcome, str):
                report.rejected[outcome] += 1
            else:
                report.decoded += 1
                report.merged_points += outcome
            if progress is not None and (k + 1) % 10_000 == 0:
                progress(k + 1)
        report.seconds = time.perf_counter() - started
        return report

    def check(self, fuzz_case: FuzzCase) -> str | int:
        """The DecodeError reason, or the points the merge added; raises on a contract violation."""
        decoder = self.decoder
        if fuzz_case.schemaless_schema is not None:
            decoder = self.schemaless_decoders["ztf" if fuzz_case.schemaless_schema["name"].startswith("ztf") else "lsst"]
        try:
            alert = decoder.decode(fuzz_case.payload)
        except DecodeError as error:
            if error.reason not in DecodeError.REASONS:
                raise AssertionError(f"reason {error.reason!r} outside the vocabulary") from error
            return error.reason
        check_alert(alert)
        return self.check_merge(alert)

    def check_merge(self, alert: Alert) -> int:
        """Merge into the long-lived store (bounds, order, finiteness), then check idempotence on a fresh one.

        Idempotence is checked from an empty object because earlier cases may have merged
        *other* content under the same detection ids (mutated times or magnitudes): real
        surveys never re-issue an id with different content, and a re-merge after the first
        version was trimmed away legitimately adds the second.
        """
        merged = self.store.merge(alert)
        check_state(merged.state, self.store.max_points_per_object)
        fresh = LightCurveStore(None, max_points_per_object=self.store.max_points_per_object)
        first = _snapshot(fresh.merge(alert).state)
        again = fresh.merge(alert)
        if _snapshot(again.state) != first:
            raise AssertionError(f"merging alert {alert.alert_id} twice changed the state")
        decision = self.policy.decide(merged.state, alert.time)
        if decision.verdict not in ("score", "below_minimum", "throttled"):
            raise AssertionError(f"unknown verdict {decision.verdict}")
        return merged.new_points


def _snapshot(state) -> dict[str, bytes]:
    return {band: series.ids.tobytes() + series.time.tobytes() for band, series in state.bands.items()}


def check_alert(alert: Alert) -> None:
    """The :mod:`broker_filter.streams.alert` contract; raises AssertionError naming the broken clause."""
    ids = [d.detection_id for d in alert.detections]
    times = [d.time for d in alert.detections]
    if len(set(ids)) != len(ids):
        raise AssertionError("duplicate detection ids")
    if not all(math.isfinite(t) for t in times):
        raise AssertionError("a detection without a finite time")
    if any(b < a for a, b in zip(times, times[1:])):
        raise AssertionError("detections not sorted by time")
    if alert.trigger_id not in ids:
        raise AssertionError("the trigger is not among the detections")
    if alert.survey not in ("ztf", "lsst") or not alert.object_id:
        raise AssertionError(f"survey {alert.survey!r} / object id {alert.object_id!r}")
    for det in alert.detections:
        if det.usable and not (det.mag_err > 0 and math.isfinite(det.mag)):
            raise AssertionError("a usable detection with a non-finite magnitude or error")


def check_state(state, max_points: int) -> None:
    if state.n_points > max_points:
        raise AssertionError(f"{state.n_points} points held, bound {max_points}")
    for band, series in state.bands.items():
        if len(np.unique(series.ids)) != len(series):
            raise AssertionError(f"band {band}: duplicate ids")
        if np.any(np.diff(series.time) < 0):
            raise AssertionError(f"band {band}: not sorted by time")
        finite = np.isfinite(series.time) & np.isfinite(series.mag) & np.isfinite(series.mag_err)
        if not finite.all() or not np.all(series.mag_err > 0):
            raise AssertionError(f"band {band}: non-finite values or non-positive errors held")


# -- byte mutations ---------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> tuple[str, bytes]:
    """One of a few classic mutations (AFL's havoc stage, in small)."""
    name, mutate = rng.choice(BYTE_MUTATIONS)
    return name, bytes(mutate(rng, bytearray(data), other)) if data else b""


def _flip_bits(rng, data, other):
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return data


def _interesting_bytes(rng, data, other):
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.choice(INTERESTING_BYTES)
    return data


def _truncate(rng, data, other):
    return data[: rng.randrange(len(data))]


def _insert_random(rng, data, other):
    position = rng.randrange(len(data) + 1)
    return data[:position] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[position:]


def _delete_range(rng, data, other):
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 256):]


def _duplicate_range(rng, data, other):
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 256)]
    position = rng.randrange(len(data) + 1)
    return data[:position] + chunk + data[position:]


def _splice(rng, data, other):
    cut = rng.randrange(len(data))
    return data[:cut] + other[rng.randrange(len(other)) :]


def _huge_length(rng, data, other):
    """A varint claiming an absurd length or count (fastavro then tries to allocate it)."""
    position = rng.randrange(len(data))
    varint = bytes([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
    return data[:position] + varint + data[position + rng.randint(0, len(varint)):]


BYTE_MUTATIONS = (
    ("flip_bits", _flip_bits),
    ("interesting_bytes", _interesting_bytes),
    ("truncate", _truncate),
    ("insert_random", _insert_random),
    ("delete_range", _delete_range),
    ("duplicate_range", _duplicate_range),
    ("splice", _splice),
    ("huge_length", _huge_length),
)


def _header_end(payload: bytes) -> int:
    """Offset of the first data block: the header ends with the 16-byte sync marker that also closes the file."""
    sync = payload[-16:]
    return payload.index(sync) + 16


# -- record mutations -------------------------------------------------------------------


def _points(seeds: SeedAlerts, record) -> list[dict]:
    points = [record[trigger_key(seeds.survey)]]
    points += [p for p in (record.get(history_key(seeds.survey)) or ()) if isinstance(p, dict)]
    return points


def _float_fields(point: dict) -> list[str]:
    return [k for k, v in point.items() if isinstance(v, float)]


def _bad_float(rng, seeds, record, schema):
    point = rng.choice(_points(seeds, record))
    names = _float_fields(point)
    if names:
        point[rng.choice(names)] = rng.choice(INTERESTING_FLOATS)


def _bad_photometry(rng, seeds, record, schema):
    """The fields the light curve is made of: magnitudes, fluxes, errors, times."""
    wanted = ("magpsf", "sigmapsf", "magnr", "sigmagnr", "jd", "psfFlux", "psfFluxErr", "midpointMjdTai")
    for point in rng.sample(_points(seeds, record), k=min(3, len(_points(seeds, record)))):
        names = [k for k in wanted if k in point]
        if names:
            point[rng.choice(names)] = rng.choice(INTERESTING_FLOATS)


def _bad_int(rng, seeds, record, schema):
    point = rng.choice(_points(seeds, record))
    names = [k for k, v in point.items() if isinstance(v, int) and not isinstance(v, bool)]
    if names:
        name = rng.choice(names)
        limit = 2**31 - 1 if name in ("fid", "programid", "visit", "detector", "nid", "rcid", "field") else 2**63 - 1
        point[name] = max(-limit - 1, min(limit, rng.choice(INTERESTING_INTS)))


def _drop_field(rng, seeds, record, schema):
    key = trigger_key(seeds.survey)
    name = rng.choice(sorted(record[key]))
    del record[key][name]
    return without_field(schema, (key, name))


def _drop_top_field(rng, seeds, record, schema):
    name = rng.choice(sorted(record))
    del record[name]
    return without_field(schema, (name,))


def _empty_history(rng, seeds, record, schema):
    record[history_key(seeds.survey)] = rng.choice((None, []))


def _duplicate_history(rng, seeds, record, schema):
    key = history_key(seeds.survey)
    history = list(record.get(key) or ())
    trigger = dict(record[trigger_key(seeds.survey)])
    if seeds.survey == "ztf":
        trigger = {k: trigger.get(k) for k in _prv_fields(history, trigger)}
    record[key] = history + history + ([trigger] if history else [])
    rng.shuffle(record[key])


def _prv_fields(history, trigger):
    return list(history[0]) if history else list(trigger)


def _shuffle_history(rng, seeds, record, schema):
    history = list(record.get(history_key(seeds.survey)) or ())
    rng.shuffle(history)
    record[history_key(seeds.survey)] = history


def _object_id(rng, seeds, record, schema):
    if seeds.survey == "ztf":
        record["objectId"] = rng.choice(("", " ", "\x00", "é" * 300, "x" * 10_000))
    else:
        record["diaSource"]["diaObjectId"] = rng.choice((0, -1, 2**63 - 1, -(2**63)))


def _band(rng, seeds, record, schema):
    point = rng.choice(_points(seeds, record))
    if "fid" in point:
        point["fid"] = rng.choice((0, 4, 7, -1, 2**31 - 1))
    elif "band" in point:
        point["band"] = rng.choice(("", "w", "Y", "u", "gg", "\x00"))


def _many_points(rng, seeds, record, schema):
    key = history_key(seeds.survey)
    history = [p for p in (record.get(key) or ()) if isinstance(p, dict)]
    if history:
        record[key] = [dict(rng.choice(history)) for _ in range(rng.randint(200, 700))]
        id_field = "candid" if seeds.survey == "ztf" else "diaSourceId"
        time_field = "jd" if seeds.survey == "ztf" else "midpointMjdTai"
        for k, point in enumerate(record[key]):
            if point.get(id_field) is not None:
                point[id_field] = 10**12 + k
            point[time_field] = point[time_field] + rng.uniform(-50, 0)


RECORD_MUTATIONS = (
    ("bad_float", _bad_float),
    ("bad_photometry", _bad_photometry),
    ("bad_int", _bad_int),
    ("drop_field", _drop_field),
    ("drop_top_field", _drop_top_field),
    ("empty_history", _empty_history),
    ("duplicate_history", _duplicate_history),
    ("shuffle_history", _shuffle_history),
    ("object_id", _object_id),
    ("band", _band),
    ("many_points", _many_points),
)
