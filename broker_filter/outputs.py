"""Output records: what each input alert becomes, and their Avro schemas.

Three topics (or files, in replay), one record per input alert in exactly one of the first
and third:

==================  ==========================================  ==================================
topic               record                                      when
==================  ==========================================  ==================================
classification      ``Classification`` (classification_v3)     every alert that decoded: status
                                                                ``scored``, ``below_minimum`` or
                                                                ``throttled``
novelty             ``Novelty`` (novelty_v3)                    scored and flagged novel (a copy
                                                                of the classification's content)
dead-letter         the original bytes; headers ``reason``,     the alert did not decode
                    ``detail``, ``origin``
==================  ==========================================  ==================================

Below-minimum alerts go to the classification topic with a status (rather than a topic of
their own) so that a consumer accounting for alerts reads one topic, and so that a
classifier's "not yet" is visible next to its answers. Keys are ``record_id`` =
``survey:object_id:alert_id``: deterministic, so that consumers of the at-least-once mode
can de-duplicate (a compacted topic does it for them).

Schemas are versioned files in ``broker_filter/schemas`` (``<name>_v<N>.avsc``); records on
Kafka are schemaless Avro (the schema is this package's, versioned with it).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import fastavro

from broker_filter import __version__
from broker_filter.model.taxonomy import alerce_class, elasticc_class_id
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.kafka_config import redact_urls

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_VERSION = 3
#: The classifier every record names (``classifier``), beside the bundle id and our version.
CLASSIFIER = "rnn-autoencoder-gmm"  # Tsang & Schultz 2019
PERCENTILES = {"p80": 80, "p95": 95}
MAX_HEADER_CHARS = 1000  # of a dead letter's detail and origin
OUTPUT_TOO_LARGE = "output_too_large"  # the dead-letter reason of an input whose record the brokers cannot take

OutputKind = Literal["classification", "novelty", "dead_letter"]


@dataclass(frozen=True)
class ModelIdentity:
    """What every record says about the model that made it."""

    bundle_id: str
    bundle_version: str
    novelty_threshold: str  # "p80" | "p95"
    threshold_energy: float

    @property
    def percentile(self) -> int:
        return PERCENTILES[self.novelty_threshold]


@dataclass(frozen=True)
class DeadLetter:
    """An input that did not decode, kept whole: the original bytes and why."""

    origin: str
    reason: str
    detail: str
    payload: bytes
    original_size: int | None = None  # set when ``payload`` was cut to fit the dead-letter topic

    def headers(self) -> list[tuple[str, bytes]]:
        """``detail`` and ``origin`` cut to :data:`MAX_HEADER_CHARS`, URL credentials masked: a
        hostile input must not make its own dead letter too large, or leak a password."""
        detail, origin = (redact_urls(_cut(text)) for text in (self.detail, self.origin))
        headers = [("reason", self.reason.encode()), ("detail", detail.encode()), ("origin", origin.encode())]
        if self.original_size is not None:
            headers.append(("original_size", str(self.original_size).encode()))
        return headers

    def fitting(self, max_bytes: int) -> DeadLetter:
        """This letter, its payload cut to ``max_bytes`` if longer: an input too large for the
        brokers must not make its own dead letter undeliverable (and stall the stream)."""
        if len(self.payload) <= max_bytes:
            return self
        return DeadLetter(self.origin, self.reason, self.detail, self.payload[:max_bytes], len(self.payload))

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": redact_urls(_cut(self.origin)),
            "reason": self.reason,
            "detail": redact_urls(_cut(self.detail)),
            "payload_base64": base64.b64encode(self.payload).decode("ascii"),
        }

    @classmethod
    def of(cls, origin: str, error: DecodeError, payload: bytes) -> DeadLetter:
        return cls(origin, error.reason, error.detail, payload)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_HEADER_CHARS else f"{text[:MAX_HEADER_CHARS]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Output:
    """One record bound for a topic (or file): ``value`` is a record dict, or a DeadLetter.

    ``origin`` names the input it came from (``topic[partition]@offset``, or an archive
    position), so that a record the brokers cannot take is dead-lettered under its input.
    """

    kind: OutputKind
    key: str
    value: dict[str, Any] | DeadLetter
    origin: str = ""


def record_id(alert: Alert) -> str:
    return f"{alert.survey}:{alert.object_id}:{alert.alert_id}"


def classification_record(
    alert: Alert,
    *,
    status: str,
    model: ModelIdentity,
    min_points: int,
    n_points: int,
    bands_used: tuple[str, ...] = (),
    probabilities: dict[str, float] | None = None,
    top_class: str | None = None,
    energy: float | None = None,
    novel: bool | None = None,
    p_value: float | None = None,
    threshold_energy: float | None = None,
    timestamp_ms: int | None,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "record_id": record_id(alert),
        "status": status,
        "object_id": alert.object_id,
        "alert_id": int(alert.alert_id),
        "survey": alert.survey,
        "band": alert.trigger.band,
        "bands_used": list(bands_used),
        "n_points": int(n_points),
        "min_points": int(min_points),
        "probabilities": probabilities,
        "top_class": top_class,
        "energy": energy,
        "novelty_p_value": p_value,
        "novel": None if energy is None else bool(novel),
        "novelty_threshold_percentile": model.percentile,
        "novelty_threshold_energy": float(model.threshold_energy if threshold_energy is None else threshold_energy),
        "bundle_id": model.bundle_id,
        "bundle_version": model.bundle_version,
        "classifier": CLASSIFIER,
        "software_version": __version__,
        "ra": _finite_or_none(alert.ra),
        "dec": _finite_or_none(alert.dec),
        "alerce_class": alerce_class(top_class),
        "elasticc_class_id": elasticc_class_id(top_class),
        "alert_time_mjd": float(alert.time),
        "alert_timestamp_ms": timestamp_ms,
        "processed_at_ms": int(now_ms),
    }


_NOVELTY_DROPPED = ("status", "min_points", "novel")


def novelty_record(classification: dict[str, Any]) -> dict[str, Any]:
    """The novelty topic's copy of a scored, flagged classification."""
    return {k: v for k, v in classification.items() if k not in _NOVELTY_DROPPED}


@cache
def parsed_schema(name: str) -> dict:
    """``name`` is ``classification`` or ``novelty``; the current version's parsed schema."""
    return fastavro.parse_schema(json.loads((SCHEMA_DIR / f"{name}_v{SCHEMA_VERSION}.avsc").read_text()))


def encode(kind: OutputKind, value: dict[str, Any] | DeadLetter) -> bytes:
    """Kafka value bytes: schemaless Avro for records, the original bytes for dead letters."""
    if isinstance(value, DeadLetter):
        return value.payload
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(kind), value)
    return buffer.getvalue()


def decode(kind: OutputKind, payload: bytes) -> dict[str, Any]:
    """The inverse of :func:`encode` for consumers (and tests) of our topics."""
    return fastavro.schemaless_reader(io.BytesIO(payload), parsed_schema(kind))


@dataclass(frozen=True)
class Encoded:
    """One output ready for its topic: value bytes, key, headers (dead letters only)."""

    kind: OutputKind
    key: str
    value: bytes
    headers: list[tuple[str, bytes]] | None


def encode_all(outputs: Sequence[Output], max_bytes: int) -> list[Encoded]:
    """``outputs`` encoded, each within ``max_bytes`` (key and value), in order.

    An input whose record the brokers would refuse (an object id of 450 KB makes one) would
    abort its transaction at every retry and stall its partition for good. Instead all of that
    input's outputs give way to one dead letter (reason :data:`OUTPUT_TOO_LARGE`, under the
    input's origin, carrying the record cut to fit), and the stream goes on. Dead letters are
    cut to fit as they are.
    """
    encoded: list[Encoded] = []
    too_large: dict[str, str] = {}
    for output in outputs:
        if isinstance(output.value, DeadLetter):
            letter = output.value.fitting(max_bytes)
            encoded.append(Encoded(output.kind, output.key, encode(output.kind, letter), letter.headers()))
            continue
        value = encode(output.kind, output.value)
        size = len(value) + len(output.key.encode())
        if size > max_bytes:
            too_large.setdefault(output.origin, f"its {output.kind} record of {size} bytes exceeds the {max_bytes}-byte message limit")
        encoded.append(Encoded(output.kind, output.key, value, None))
    if not too_large:
        return encoded
    kept: list[Encoded] = []
    lettered: set[str] = set()
    for output, item in zip(outputs, encoded):
        if output.origin not in too_large or isinstance(output.value, DeadLetter):
            kept.append(item)
        elif output.origin not in lettered:  # the input's first output becomes its one dead letter; the others go
            lettered.add(output.origin)
            origin = output.origin or output.key[:MAX_HEADER_CHARS]
            letter = DeadLetter(origin, OUTPUT_TOO_LARGE, too_large[output.origin], item.value).fitting(max_bytes)
            kept.append(Encoded("dead_letter", origin, letter.payload, letter.headers()))
    return kept
