"""Bytes of one alert -> :class:`broker_filter.streams.alert.Alert`, whatever the framing or survey.

Three framings reach a broker:

* an Avro object-container file (ZTF publishes one one-record file per Kafka message;
  archives hold many records per file) — the writer schema travels in the header;
* the Confluent wire format: ``0x00``, a 4-byte big-endian schema id, then the record —
  the writer schema comes from a schema registry (``registry_url``) or a local folder
  of ``<id>.avsc`` files (``schema_dir``); Rubin publishes this way;
* schemaless Avro with a writer schema configured up front (``schema``).

Decoding speed matters (a ZTF night is ~10^5-10^6 alerts), so every writer schema is
parsed once, and its projected reader schema (:func:`broker_filter.streams.schema.reader_schema`) with
it, cached by the writer schema's text or id. The pair is also compiled into a program
(:mod:`broker_filter.streams.avro_program`) that :mod:`broker_filter.streams.fastdecode` runs in numba, ~10x faster
than fastavro's walk over the thousands of values an alert holds; the record dicts it
returns are the ones fastavro returns, so both paths share the survey converters. A
schema the program does not cover, or a machine without numba, decodes with fastavro.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro

from broker_filter.streams import avro_frame, rubin, ztf
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.avro_program import Unsupported, compile_program
from broker_filter.streams.kafka_config import redact_urls
from broker_filter.streams.limits import AlertLimits
from broker_filter.streams.schema import SchemaInfo, identify, load_schema_file, reader_schema

if TYPE_CHECKING:
    from broker_filter.streams.fastdecode import FastReader

log = logging.getLogger(__name__)
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
MAX_SCHEMA_BYTES = 1024 * 1024  # ZTF's schema is ~15 KB, Rubin's ~60 KB
MAX_SCHEMA_DEPTH = 64  # nesting of JSON arrays and objects; real alert schemas stay under 20
SCHEMA_CACHE_SIZE = 256  # distinct writer schemas kept parsed; a hostile producer may send a new one per message
WIRE_MAGIC = 0
REGISTRY_CONNECT_TIMEOUT_S = 3.0
REGISTRY_TIMEOUT_S = 10.0  # per read
REGISTRY_DEADLINE_S = 15.0  # per call, whatever the reads do: within the daemon's SIGTERM grace and max.poll.interval.ms
MAX_REGISTRY_ANSWER_BYTES = 2 * MAX_SCHEMA_BYTES  # the schema is JSON text inside JSON: escapes grow it
UNKNOWN_ID_TTL_S = 60.0  # an id the registry lacks is asked again after this (it may be registered since)
_CONVERTERS: dict[str, Callable[[dict[str, Any], str], Alert]] = {"ztf": ztf.to_alert, "lsst": rubin.to_alert}


@dataclass(frozen=True, slots=True)
class ParsedSchema:
    """A writer schema ready to decode with: parsed writer, parsed projected reader, identity,
    and the compiled reader (None: this schema decodes with fastavro)."""

    writer: Any
    reader: Any
    info: SchemaInfo
    raw: dict[str, Any]
    fast: FastReader | None = None


def read_record(stream: io.BytesIO, schema: ParsedSchema) -> dict[str, Any]:
    """One schemaless record at the stream's position; the stream is left after it."""
    if schema.fast is None:
        return _fastavro_record(stream, schema)
    try:
        with stream.getbuffer() as view:
            record, end = schema.fast.read(view, stream.tell())
    except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
        raise DecodeError.boundary(exc, "invalid_value") from None
    stream.seek(end)
    return record


def read_payload(data: bytes, pos: int, schema: ParsedSchema) -> tuple[dict[str, Any], int]:
    """One schemaless record starting at byte ``pos`` of ``data``, and where it ends."""
    if schema.fast is not None:
        try:
            return schema.fast.read(data, pos)
        except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
            raise DecodeError.boundary(exc, "invalid_value") from None
    stream = io.BytesIO(data)
    stream.seek(pos)
    return _fastavro_record(stream, schema), stream.tell()


def _fastavro_record(stream: io.BytesIO, schema: ParsedSchema) -> dict[str, Any]:
    """One schemaless record; every failure inside fastavro becomes a DecodeError.

    Bytes from the network can make fastavro raise nearly anything (EOFError, ValueError,
    UnicodeDecodeError, IndexError, OverflowError, MemoryError on an absurd length), so the
    boundary to the library catches broadly and classifies; our own code past it does not.
    """
    try:
        return fastavro.schemaless_reader(stream, schema.writer, schema.reader)
    except (EOFError, StopIteration) as exc:
        raise DecodeError("truncated", f"record ends early: {exc!r}") from None
    except Exception as exc:  # noqa: BLE001 - see docstring: classify, never leak
        raise DecodeError("invalid_value", f"record does not match its schema: {exc!r}") from None


def parse_schema(raw: dict[str, Any], keep_cutouts: bool, compiled: bool = True) -> ParsedSchema:
    """Parse and project a writer schema; ``compiled`` also builds the numba reader.

    A schema that is not an alert's is ``unknown_schema``; one that is not a valid Avro schema
    at all (``"fields": null``, a field name that is a list, nesting beyond
    :data:`MAX_SCHEMA_DEPTH`) is ``bad_schema``, whatever exception our code or fastavro
    raises on it.
    """
    _check_depth(raw)
    try:
        info = identify(raw)
        projected = reader_schema(raw, keep_cutouts)
        writer = fastavro.parse_schema(raw)
        reader = fastavro.parse_schema(projected)
    except Exception as exc:  # noqa: BLE001 - fastavro's schema errors have no common base
        raise DecodeError.boundary(exc, "bad_schema") from None
    return ParsedSchema(writer, reader, info, raw, compiled_reader(raw, projected) if compiled else None)


def load_schema_json(text: bytes | str) -> Any:
    """A writer schema's JSON, bounded in size and depth before anything walks it."""
    if len(text) > MAX_SCHEMA_BYTES:
        raise DecodeError("bad_schema", f"schema of {len(text)} bytes > {MAX_SCHEMA_BYTES}")
    try:
        return json.loads(text)
    except RecursionError:
        raise DecodeError("bad_schema", f"schema JSON nested deeper than the parser allows (limit {MAX_SCHEMA_DEPTH})") from None
    except ValueError as exc:
        raise DecodeError("unknown_schema", f"schema is not JSON: {exc}") from None


def _check_depth(node: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_SCHEMA_DEPTH` (iteratively: no recursion to exhaust)."""
    pending = [(node, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise DecodeError("bad_schema", f"schema nested deeper than {MAX_SCHEMA_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def compiled_reader(writer: dict[str, Any], reader: dict[str, Any]) -> FastReader | None:
    """The numba reader for this pair, or None where fastavro must decode it (a schema
    feature the program lacks, or numba unusable here): nothing is lost either way."""
    reader_class = _fast_reader_class()
    if reader_class is None:
        return None
    try:
        return reader_class(compile_program(writer, reader), columns=True)
    except (Unsupported, KeyError, TypeError, ValueError):  # odd but valid schemas stay with fastavro
        return None


@functools.cache
def _fast_reader_class() -> type[FastReader] | None:
    """Import the numba kernel once; without numba (or a writable cache for its machine
    code) say so once and decode with fastavro."""
    try:
        from broker_filter.streams.fastdecode import FastReader
    except (ImportError, RuntimeError) as exc:
        log.warning("compiled Avro decoding is off (%s): decoding with fastavro, several times slower", exc)
        return None
    return FastReader


class SchemaRegistryUnavailable(Exception):
    """The schema registry did not answer: a fault of the service, not of the message.

    Never a dead letter (the alert is valid; its schema is just out of reach): the daemon
    pauses the message's partition and reads it again once the registry is back.
    ``retry_in`` is how long the decoder's circuit stays open (seconds).
    """

    def __init__(self, detail: str, retry_in: float) -> None:
        super().__init__(detail)
        self.retry_in = retry_in


class _Circuit:
    """Fail fast while the registry is down: one failed call opens the circuit for a back-off
    that doubles (1 s to 30 s) until a call succeeds, so that a registry outage costs one
    timeout per back-off, not one per message."""

    FIRST_S, LONGEST_S = 1.0, 30.0

    def __init__(self) -> None:
        self.backoff = 0.0
        self.open_until = 0.0
        self.reason = ""

    def check(self) -> None:
        remaining = self.open_until - time.monotonic()
        if remaining > 0:
            raise SchemaRegistryUnavailable(f"schema registry unavailable ({self.reason}); retrying in {remaining:.1f} s", remaining)

    def failed(self, reason: str) -> SchemaRegistryUnavailable:
        self.backoff = min(self.LONGEST_S, max(self.FIRST_S, 2 * self.backoff))
        self.open_until = time.monotonic() + self.backoff
        self.reason = reason
        return SchemaRegistryUnavailable(f"schema registry unavailable ({reason}); retrying in {self.backoff:.1f} s", self.backoff)

    def succeeded(self) -> None:
        self.backoff = 0.0


class AlertDecoder:
    """Decode one Kafka message (or archive record) into an :class:`Alert`.

    ``decode`` raises only :class:`DecodeError`. Framing is detected per message:
    a container file starts with ``Obj\\x01``; with ``registry_url`` or ``schema_dir`` set,
    a message starting with ``0x00`` is the Confluent wire format; otherwise the message is
    schemaless Avro written with ``schema``. ``keep_cutouts=True`` keeps the three image
    stamps in ``alert.extra["cutouts"]`` (bytes), at the price of decoding them.
    ``compiled=False`` decodes with fastavro only (the reference the compiled path is
    tested and benchmarked against); both give the same alerts and the same errors.
    """

    def __init__(self, keep_cutouts: bool = False, schema: dict | None = None,
                 schema_dir: Path | None = None, registry_url: str | None = None,
                 compiled: bool = True, limits: AlertLimits = AlertLimits()) -> None:
        self.keep_cutouts = keep_cutouts
        self.compiled = compiled
        self.limits = limits
        self.schema_dir = Path(schema_dir) if schema_dir is not None else None
        self.registry_url = registry_url.rstrip("/") if registry_url else None
        self._configured = parse_schema(schema, keep_cutouts, compiled) if schema is not None else None
        self._by_text: dict[bytes, ParsedSchema] = {}
        self._by_id: dict[int, ParsedSchema] = {}
        self._registry = _Circuit()
        self._unknown: dict[int, tuple[float, str]] = {}  # schema id -> (retry after, why): ids the registry lacks

    # framing ---------------------------------------------------------------------------
    def decode(self, payload: bytes) -> Alert:
        """One message -> Alert; raises DecodeError with a reason from DecodeError.REASONS, and nothing else."""
        try:
            return self._decode(payload)
        except SchemaRegistryUnavailable:
            raise  # not the message's fault: retried, never dead-lettered
        except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
            raise DecodeError.boundary(exc) from None

    def _decode(self, payload: bytes) -> Alert:
        if not isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) == 0:
            raise DecodeError("empty", "empty message")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise DecodeError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        payload = bytes(payload)
        if avro_frame.is_container(payload):
            held = avro_frame.count_records(payload, avro_frame.read_header(payload), stop_above=1)
            if held != 1:
                more = "more than 1" if held > 1 else "none"
                raise DecodeError("invalid_value", f"a message must hold one alert, this container holds {more}")
            (alert,) = self.iter_container(payload)
            return alert
        if payload[0] == WIRE_MAGIC and (self.registry_url or self.schema_dir) and len(payload) > 5:
            schema = self._schema_for_id(struct.unpack(">I", payload[1:5])[0])
            return self.convert(read_payload(payload, 5, schema)[0], schema)
        if self._configured is not None:
            return self.convert(read_payload(payload, 0, self._configured)[0], self._configured)
        raise DecodeError("not_avro", "neither an Avro container nor a configured schemaless / wire-format message")

    def iter_container(self, payload: bytes):
        """Decode every record of a container file (generator of Alert; DecodeError stops it)."""
        for schema, record in self.iter_container_records(payload):
            yield self.convert(record, schema)

    def iter_container_records(self, payload: bytes):
        """(ParsedSchema, record dict) for each record of a container file."""
        header = avro_frame.read_header(payload)
        schema = self.schema_for_text(header.schema_json)
        for block in avro_frame.iter_blocks(payload, header, self.limits.max_decoded_bytes):
            pos = 0
            for _ in range(block.count):
                record, pos = read_payload(block.data, pos, schema)
                yield schema, record

    # schemas ---------------------------------------------------------------------------
    def schema_for_text(self, schema_json: bytes) -> ParsedSchema:
        """The parsed pair for a container header's schema text, parsed once per text."""
        cached = self._by_text.get(schema_json)
        if cached is None:
            cached = _remember(self._by_text, schema_json, parse_schema(load_schema_json(schema_json), self.keep_cutouts, self.compiled))
        return cached

    def _schema_for_id(self, schema_id: int) -> ParsedSchema:
        cached = self._by_id.get(schema_id)
        if cached is None:
            unknown = self._unknown.get(schema_id)
            if unknown is not None and unknown[0] > time.monotonic():
                raise DecodeError("unknown_schema", unknown[1])  # asked recently: a flood of one bad id costs one request a minute
            try:
                raw = self._fetch_schema(schema_id)
            except DecodeError as error:
                if error.reason == "unknown_schema":
                    if len(self._unknown) >= SCHEMA_CACHE_SIZE:
                        del self._unknown[next(iter(self._unknown))]
                    self._unknown[schema_id] = (time.monotonic() + UNKNOWN_ID_TTL_S, error.detail)
                raise
            cached = _remember(self._by_id, schema_id, parse_schema(raw, self.keep_cutouts, self.compiled))
        return cached

    def _fetch_schema(self, schema_id: int) -> dict[str, Any]:
        if self.schema_dir is not None:
            for suffix in (".avsc", ".json"):
                path = self.schema_dir / f"{schema_id}{suffix}"
                if path.is_file():
                    return load_schema_file(path)
            if self.registry_url is None:
                raise DecodeError("unknown_schema", f"no schema {schema_id} in {self.schema_dir}")
        self._registry.check()
        try:
            schema = fetch_registry_schema(self.registry_url, schema_id)
        except DecodeError as error:
            if error.reason == "schema_registry":
                raise self._registry.failed(error.detail) from None
            raise
        self._registry.succeeded()
        return schema

    # records ---------------------------------------------------------------------------
    def convert(self, record: Any, schema: ParsedSchema) -> Alert:
        """A decoded record -> Alert, within :attr:`limits`; raises only DecodeError."""
        if not isinstance(record, dict):
            raise DecodeError("invalid_value", "the top-level Avro value is not a record")
        try:
            alert = self.limits.check(_CONVERTERS[schema.info.survey](record, schema.info.version))
        except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
            raise DecodeError.boundary(exc, "invalid_value") from None
        if self.keep_cutouts:
            alert.extra["cutouts"] = _cutouts(record)
        return alert


def _remember(cache: dict, key: Any, value: ParsedSchema) -> ParsedSchema:
    """Keep at most :data:`SCHEMA_CACHE_SIZE` parsed schemas, the oldest forgotten first."""
    if len(cache) >= SCHEMA_CACHE_SIZE:
        del cache[next(iter(cache))]
    cache[key] = value
    return value


def fetch_registry_schema(registry_url: str | None, schema_id: int) -> dict[str, Any]:
    """GET ``/schemas/ids/{id}`` from a Confluent-compatible schema registry.

    Bounded whatever the registry does: a total deadline for the call (a registry that drips
    one byte every 3 s never trips a per-read timeout) and a cap on the answer's size (a
    400 MB body is refused at the cap, not read whole).
    """
    import httpx

    url = f"{registry_url}/schemas/ids/{schema_id}"
    shown = redact_urls(url)  # credentials in the URL never reach a log line or a dead-letter header
    deadline = time.monotonic() + REGISTRY_DEADLINE_S
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(REGISTRY_TIMEOUT_S, connect=REGISTRY_CONNECT_TIMEOUT_S)) as response:
            if response.status_code == 404:
                raise DecodeError("unknown_schema", f"schema id {schema_id} is not in the registry {redact_urls(str(registry_url))}")
            if response.status_code != 200:  # 5xx, 429, and 401/403 (our credentials): the service, not the message
                raise DecodeError("schema_registry", f"{shown}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_REGISTRY_ANSWER_BYTES:
                    raise DecodeError("schema_registry", f"{shown}: answer over {MAX_REGISTRY_ANSWER_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise DecodeError("schema_registry", f"{shown}: no complete answer within {REGISTRY_DEADLINE_S:g} s")
    except httpx.HTTPError as exc:
        raise DecodeError("schema_registry", redact_urls(f"{shown}: {type(exc).__name__}: {exc}")) from None
    try:
        return load_schema_json(json.loads(bytes(body))["schema"])
    except DecodeError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError("schema_registry", f"{shown}: unexpected answer ({exc})") from None


def _cutouts(record: dict[str, Any]) -> dict[str, bytes | None]:
    """ZTF stamps are records {fileName, stampData}; Rubin's are bare bytes."""
    out: dict[str, bytes | None] = {}
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        value = record.get(key)
        out[key.removeprefix("cutout").lower()] = value.get("stampData") if isinstance(value, dict) else value
    return out


def from_record(record: dict[str, Any], schema_name_or_version: str) -> Alert:
    """An already-parsed record (e.g. from a Spark/Fink dataframe or fastavro) -> Alert.

    ``schema_name_or_version`` names the survey schema: "ztf", "ztf.alert", "4.02", "3.3"
    for ZTF; "lsst", "lsst.v10_0", ... for Rubin. A record with ``diaSource`` is Rubin
    whatever the name says.
    """
    if not isinstance(record, dict):
        raise DecodeError("invalid_value", "record is not a mapping")
    label = str(schema_name_or_version)
    survey = "lsst" if ("diaSource" in record or label.startswith("lsst")) else "ztf"
    try:
        return AlertLimits().check(_CONVERTERS[survey](record, label))
    except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
        raise DecodeError.boundary(exc, "invalid_value") from None
