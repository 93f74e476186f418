"""Alert payloads in the real survey schemas, built from a simulated labelled stream.

Every malformed input and fuzz case starts from a valid alert: a record written by
:func:`broker_filter.streams.simulate.simulate` from the repository's real light curves, in the ZTF 4.02
or Rubin lsst.v10 schema, then altered in one way. Starting from valid records is what
lets a mutation reach deep code (the converters, the state merge) rather than failing at
the first byte.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from broker_filter.streams.avro_frame import MAGIC, write_long
from broker_filter.streams.simulate import SimulationConfig, simulate
from broker_filter_proving import REPO


LIGHTCURVES = REPO / "data" / "lightcurves"

Record = dict[str, Any]


@dataclass(frozen=True)
class SeedAlerts:
    """Valid alert records of one survey and the writer schema they were written with."""

    survey: str
    schema: dict[str, Any]
    records: tuple[Record, ...]

    def record(self, index: int = -1) -> Record:
        """A deep copy, free to alter."""
        return copy_record(self.records[index])

    def with_history(self, min_points: int = 3) -> Record:
        """A copy of the first record whose history holds at least ``min_points`` entries."""
        key = history_key(self.survey)
        for record in self.records:
            if len(record.get(key) or ()) >= min_points:
                return copy_record(record)
        raise LookupError(f"no {self.survey} seed alert has {min_points} history points")


def history_key(survey: str) -> str:
    return "prv_candidates" if survey == "ztf" else "prvDiaSources"


def trigger_key(survey: str) -> str:
    return "candidate" if survey == "ztf" else "diaSource"


def simulate_seeds(out_dir: Path, survey: str = "ztf", *, max_objects: int = 4, seed: int = 0,
                   classes: tuple[str, ...] = ("RRab", "RRc", "SNIa"), lightcurves: Path = LIGHTCURVES) -> SeedAlerts:
    """Simulate a small labelled stream into ``out_dir`` and read its records back."""
    config = SimulationConfig(survey=survey, max_objects=max_objects, classes=classes, seed=seed)
    summary = simulate(lightcurves, out_dir, config)
    schema, records = None, []
    for path in sorted(Path(summary.archive).glob("*.avro")):
        with path.open("rb") as handle:
            reader = fastavro.reader(handle)
            schema = schema or reader.writer_schema
            records.extend(reader)
    if schema is None or not records:
        raise RuntimeError(f"simulation wrote no alerts into {out_dir}")
    return SeedAlerts(survey, schema, tuple(records))


def container(record: Record, schema: dict[str, Any]) -> bytes:
    """One record as an Avro object-container file (null codec): how ZTF frames each Kafka message.

    Assembled from a cached header and the schemaless record, because ``fastavro.writer``
    spends ~30 ms per call on the ZTF schema, which dominates a 100,000-case fuzz run.
    """
    body = schemaless(record, schema)
    return _header(schema) + write_long(1) + write_long(len(body)) + body + SYNC


def schemaless(record: Record, schema: dict[str, Any]) -> bytes:
    """One record without framing (a decoder configured with ``schema`` reads it)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _cached(schema)[1], record)
    return buffer.getvalue()


SYNC = bytes(range(16))
_CACHE: dict[int, tuple[dict[str, Any], Any, bytes]] = {}


def _cached(schema: dict[str, Any]) -> tuple[dict[str, Any], Any, bytes]:
    """(schema, parsed schema, container header), computed once per schema object.

    Keyed by identity and holding the schema itself, so that a key is never reused by another object.
    """
    entry = _CACHE.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_CACHE) > 64:
            _CACHE.clear()
        text = json.dumps(schema).encode()
        header = MAGIC + write_long(2)
        for key, value in ((b"avro.schema", text), (b"avro.codec", b"null")):
            header += write_long(len(key)) + key + write_long(len(value)) + value
        entry = _CACHE[id(schema)] = (schema, fastavro.parse_schema(schema), header + write_long(0) + SYNC)
    return entry


def _header(schema: dict[str, Any]) -> bytes:
    return _cached(schema)[2]


def copy_record(value: Any) -> Any:
    """A copy of a decoded Avro value (dicts, lists, scalars), ten times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: copy_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_record(item) for item in value]
    return value


def without_field(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``schema`` with the field at ``path`` (e.g. ``("candidate", "magpsf")``) removed.

    Writing a record with such a schema produces a valid Avro message that lacks a field
    the survey's schema requires: what a broken or foreign producer would send.
    """
    schema = copy.deepcopy(schema)
    node = schema
    for name in path[:-1]:
        node = _record_type(_field(node, name)["type"])
    node["fields"] = [f for f in node["fields"] if f["name"] != path[-1]]
    return schema


def _field(record_schema: dict[str, Any], name: str) -> dict[str, Any]:
    for field in record_schema["fields"]:
        if field["name"] == name:
            return field
    raise KeyError(name)


def _record_type(node: Any) -> dict[str, Any]:
    """The record inside a (possibly nullable) field type."""
    if isinstance(node, list):
        return next(_record_type(branch) for branch in node if branch != "null")
    if isinstance(node, dict) and node.get("type") == "array":
        return _record_type(node["items"])
    if isinstance(node, dict) and node.get("type") == "record":
        return node
    raise TypeError(f"not a record type: {node!r}")


def history_points(seeds: SeedAlerts, count: int, *, start_id: int, start_jd: float) -> Iterator[Record]:
    """``count`` distinct ZTF history detections for one object (ids and times increasing)."""
    template = next(p for r in seeds.records for p in (r.get("prv_candidates") or ()) if p.get("candid") is not None)
    for k in range(count):
        point = dict(template)
        point.update(candid=start_id + k, jd=start_jd + k * 0.01, magpsf=18.0 + 0.1 * ((k * 7919) % 11) / 11.0, isdiffpos="t")
        yield point
