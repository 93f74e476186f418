"""The bad-input matrix: malformed and awkward inputs, each with the outcome it must have.

Every case is one or more Kafka message values plus an expectation on what the daemon
writes for each of them: a dead letter with a given reason (the original bytes kept), or
classification records that a check accepts. The matrix is sent through a running daemon
as one stream, followed by a valid *sentinel* alert: the sentinel's record proves that the
daemon went on past every bad input.

Valid alerts are altered ZTF 4.02 records from the simulated labelled stream
(:func:`~broker_filter_proving.reliability.craft.simulate_seeds`), each case under its own object id.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker_filter_proving.reliability.craft import SeedAlerts, container, copy_record, history_points, without_field

Check = Callable[[list[dict[str, Any]]], None]

#: What the bad inputs are sent with: a limit on input messages above what any alert needs,
#: so that the 100,000-point alert (~12 MB) travels and the oversized message is refused.
OVERSIZED_BYTES = 2 * 1024 * 1024
MANY_POINTS = 100_000
OTHER_SCHEMA = {
    "type": "record",
    "name": "Reading",
    "namespace": "org.example.weather",
    "fields": [{"name": "station", "type": "string"}, {"name": "celsius", "type": "double"}],
}


@dataclass(frozen=True)
class DeadLetterExpected:
    """Each payload of the case becomes one dead letter whose ``reason`` header is one of
    ``reasons``, carrying the original bytes unless ``keeps_payload`` is False (a message too
    large to forward may be dead-lettered by reference: its origin header and size)."""

    reasons: tuple[str, ...]
    keeps_payload: bool = True


@dataclass(frozen=True)
class ClassifiedExpected:
    """Each payload becomes one classification record; ``check`` sees the case's records in input order."""

    check: Check
    description: str


@dataclass(frozen=True)
class BadInput:
    name: str
    payloads: tuple[bytes, ...]
    expected: DeadLetterExpected | ClassifiedExpected

    @property
    def expectation(self) -> str:
        if isinstance(self.expected, DeadLetterExpected):
            return f"dead letter, reason {' or '.join(self.expected.reasons)}"
        return self.expected.description


class _Builder:
    """Alters seed records; each case gets its own object id and fresh detection ids."""

    def __init__(self, seeds: SeedAlerts) -> None:
        if seeds.survey != "ztf":
            raise ValueError("the bad-input matrix is written for ZTF records")
        self.seeds = seeds
        self.template = seeds.with_history(min_points=3)
        self._next_id = 900_000_000_000_000_000

    def fresh_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def record(self, object_id: str, *, history: int = 3) -> dict[str, Any]:
        """A valid alert of ``object_id``: trigger plus ``history`` earlier detections, one band, no reference source."""
        record = copy_record(self.template)
        record["objectId"] = object_id
        candidate = record["candidate"]
        prv = [p for p in record["prv_candidates"] if p.get("candid") is not None][:1] * history
        record["prv_candidates"] = [dict(p) for p in prv]
        for k, point in enumerate(record["prv_candidates"] + [candidate]):
            point.update(candid=self.fresh_id(), fid=candidate["fid"], jd=candidate["jd"] - (history - k), isdiffpos="t", magnr=None, sigmagnr=None, distnr=None)
        record["candid"] = candidate["candid"]
        return record

    def payload(self, record: dict[str, Any], schema: dict[str, Any] | None = None) -> bytes:
        return container(record, schema or self.seeds.schema)


def bad_inputs(seeds: SeedAlerts, *, max_points_per_object: int, seed: int = 0) -> list[BadInput]:
    """The matrix (issue 6, item 3), in the order it is sent; ``max_points_per_object`` is the daemon's ``[state]`` bound."""
    b = _Builder(seeds)
    rng = random.Random(seed)
    cases: list[BadInput] = []

    def dead(name: str, reason: str, *payloads: bytes, keeps_payload: bool = True) -> None:
        cases.append(BadInput(name, payloads, DeadLetterExpected((reason,), keeps_payload)))

    def classified(name: str, description: str, check: Check, *payloads: bytes) -> None:
        cases.append(BadInput(name, payloads, ClassifiedExpected(check, description)))

    dead("random bytes", "not_avro", rng.randbytes(4096))
    valid = b.payload(b.record("bad_truncated"))
    dead("truncated Avro", "truncated", valid[: len(valid) * 2 // 3])
    dead("valid Avro of another schema", "unknown_schema", container({"station": "Palomar", "celsius": 11.5}, OTHER_SCHEMA))

    record = b.record("bad_no_object_id")
    del record["objectId"]
    # Without objectId the record is no longer recognisably a ZTF alert: "unknown_schema".
    dead("missing required field (objectId)", "unknown_schema", b.payload(record, without_field(seeds.schema, ("objectId",))))
    record = b.record("bad_no_magpsf")
    del record["candidate"]["magpsf"]
    dead("missing required field (candidate.magpsf)", "missing_field", b.payload(record, without_field(seeds.schema, ("candidate", "magpsf"))))

    for label, value in (("NaN", math.nan), ("+infinite", math.inf), ("-infinite", -math.inf)):
        record = b.record(f"bad_mag_{label}")
        record["candidate"]["magpsf"] = value
        dead(f"{label} magnitude (trigger)", "invalid_value", b.payload(record))

    record = b.record("bad_history_nan", history=4)
    record["prv_candidates"][1]["magpsf"] = math.nan
    record["prv_candidates"][2]["magpsf"] = math.inf
    classified("NaN and infinite magnitudes (history)", "classified; the 2 bad points are not held (n_points 3)", _n_points(3), b.payload(record))

    record = b.record("bad_errors", history=4)
    record["candidate"]["sigmapsf"] = 0.0
    record["prv_candidates"][0]["sigmapsf"] = -0.05
    classified("zero and negative errors", "classified; the 2 points without a positive error are not held (n_points 3)", _n_points(3), b.payload(record))

    duplicate = b.payload(b.record("bad_duplicate"))
    classified("duplicate alert (sent twice)", "two equal records under one key; state unchanged (n_points 4 both times)", _duplicates(4), duplicate, duplicate)

    records = [b.record("bad_out_of_order", history=0) for _ in range(5)]
    for k, record in enumerate(records):
        record["candidate"]["jd"] += k
    classified(
        "out-of-order alerts (newest first)",
        "each record counts the points held that were observed up to its alert: newest first, 1 each",
        _as_of_counts(),
        *(b.payload(r) for r in reversed(records)),
    )

    record = b.record("bad_many_points", history=0)
    record["prv_candidates"] = list(history_points(seeds, MANY_POINTS, start_id=b.fresh_id(), start_jd=record["candidate"]["jd"] - MANY_POINTS * 0.01 - 1))
    b._next_id += MANY_POINTS
    classified(f"an object with {MANY_POINTS:,} points", f"classified; at most {max_points_per_object} points held ([state] max_points_per_object)", _bounded_points(max_points_per_object), b.payload(record))

    record = b.record("bad_band")
    record["candidate"]["fid"] = 7
    dead("unknown band (ZTF fid 7)", "invalid_value", b.payload(record))

    empty_none, empty_list = b.record("bad_empty_history_null", history=0), b.record("bad_empty_history_list", history=0)
    empty_none["prv_candidates"], empty_list["prv_candidates"] = None, []
    classified("empty history (null and [])", "classified below_minimum with n_points 1", _below_minimum(1), b.payload(empty_none), b.payload(empty_list))

    _hostile_values(b, dead)
    _hostile_schemas(dead)

    oversized = rng.randbytes(OVERSIZED_BYTES)
    cases.append(BadInput(f"message of {OVERSIZED_BYTES >> 20} MiB (over the producer's default limit)", (oversized,), DeadLetterExpected(("too_large", "not_avro"), keeps_payload=False)))
    return cases


#: Object ids longer than the default limit are refused at decoding (``too_long``); the matrix's
#: daemon accepts ids up to this length so that a 450 KB id reaches the output stage, where its
#: record is too large for the brokers (``output_too_large``).
MATRIX_MAX_ID_CHARS = 500_000
HUGE_ID_CHARS = 450_000


def _hostile_values(b: _Builder, dead: Callable[..., None]) -> None:
    """Well-formed alerts with one absurd value (issue 13's table): each a typed dead letter, none a crash."""
    record = b.record("bad_magpsf_-1000")
    record["candidate"]["magpsf"] = -1000.0
    dead("finite but absurd magnitude (magpsf -1000)", "magnitude_out_of_range", b.payload(record))
    record = b.record("bad_magnr_-1000", history=3)
    record["prv_candidates"][0].update(magnr=-1000.0, sigmagnr=0.01, distnr=0.1)
    dead("absurd reference magnitude in the history (magnr -1000)", "magnitude_out_of_range", b.payload(record))
    record = b.record("bad_limit_jd", history=3)
    record["prv_candidates"][0].update(candid=None, jd=1e304, magpsf=None, sigmapsf=None)
    dead("an upper limit at jd 1e304", "time_out_of_range", b.payload(record))
    for label, jd in (("MJD 1e12", 1e12 + 2400000.5), ("a negative MJD", -1.0)):
        record = b.record(f"bad_time_{label.replace(' ', '_')}")
        record["candidate"]["jd"] = jd
        dead(f"observation time {label}", "time_out_of_range", b.payload(record))
    record = b.record("bad_id_" + "Z" * (MATRIX_MAX_ID_CHARS + 10))
    dead(f"an object id over [limits] max_id_chars ({MATRIX_MAX_ID_CHARS + 17:,} characters)", "too_long", b.payload(record))
    record = b.record("bad_id_" + "Z" * HUGE_ID_CHARS)
    dead(f"an object id of {HUGE_ID_CHARS // 1000} KB (its record exceeds the brokers' message size)", "output_too_large",
         b.payload(record), keeps_payload=False)  # the dead letter carries the record, cut to fit


def _hostile_schemas(dead: Callable[..., None]) -> None:
    """Containers whose writer schema is hostile: nested 50,000 deep, fields null, a list as a name, a 600 KB name."""
    from broker_filter.streams.avro_frame import single_record_container

    deep = b"[" * 50_000 + b"]" * 50_000
    dead("container schema nested 50,000 levels", "bad_schema", single_record_container(deep, b"\x00"))
    for label, schema in (("fields null", {"type": "record", "name": "alert", "fields": None}),
                          ("a field name that is a list", {"type": "record", "name": "alert", "fields": [{"name": ["objectId"], "type": "string"}]})):
        dead(f"container schema with {label}", "bad_schema", single_record_container(json.dumps(schema).encode(), b"\x00"))
    named = {"type": "record", "name": "n" * 600_000, "fields": []}
    dead("container schema named with 600 KB", "unknown_schema", single_record_container(json.dumps(named).encode(), b"\x00"))


def sentinel(seeds: SeedAlerts) -> tuple[str, bytes]:
    """A valid alert sent after the matrix: (its object id, payload)."""
    b = _Builder(seeds)
    b._next_id += 10 * MANY_POINTS
    record = b.record("bad_sentinel")
    return "bad_sentinel", b.payload(record)


# -- checks ---------------------------------------------------------------------------------


def _n_points(expected: int) -> Check:
    def check(records: list[dict[str, Any]]) -> None:
        assert [r["n_points"] for r in records] == [expected], [r["n_points"] for r in records]

    return check


def _below_minimum(expected: int) -> Check:
    def check(records: list[dict[str, Any]]) -> None:
        assert all(r["status"] == "below_minimum" and r["n_points"] == expected for r in records), records

    return check


def _duplicates(expected: int) -> Check:
    def check(records: list[dict[str, Any]]) -> None:
        first, second = records
        assert first["record_id"] == second["record_id"]
        assert strip(first) == strip(second), (strip(first), strip(second))
        assert first["n_points"] == expected

    return check


def _as_of_counts() -> Check:
    """Records are as-of views: an alert counts the held points observed up to its own time.
    Sent newest first, no earlier point has arrived when each alert is processed."""

    def check(records: list[dict[str, Any]]) -> None:
        assert [r["n_points"] for r in records] == [1] * len(records), [r["n_points"] for r in records]
        times = [r["alert_time_mjd"] for r in records]
        assert times == sorted(times, reverse=True), "records must follow the input order"

    return check


def _bounded_points(bound: int) -> Check:
    def check(records: list[dict[str, Any]]) -> None:
        (record,) = records
        assert 0 < record["n_points"] <= bound, record["n_points"]

    return check


RUN_DEPENDENT = ("processed_at_ms", "alert_timestamp_ms")


def strip(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that legitimately differ between two runs (times of processing)."""
    return {k: v for k, v in record.items() if k not in RUN_DEPENDENT}
