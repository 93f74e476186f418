"""The compiled decoder (numba) against fastavro: same records, same alerts, same errors."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import threading
from dataclasses import astuple
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_filter.streams import avro_frame
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.avro_program import Unsupported, compile_program
from broker_filter.streams.codec import AlertDecoder
from broker_filter.streams.fastdecode import FastReader
from broker_filter.streams.limits import AlertLimits
from broker_filter.streams.schema import reader_schema, rubin_schema, ztf_schema

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _key(alert: Alert) -> tuple:
    """Everything an Alert holds, NaN made comparable (NaN != NaN would hide nothing here)."""
    def norm(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    detections = tuple(tuple(norm(v) for v in astuple(d)) for d in alert.detections)
    head = (alert.object_id, alert.alert_id, alert.survey, alert.schema_version, alert.trigger_id,
            norm(alert.ra), norm(alert.dec))
    return head, detections, repr(sorted(alert.extra.items()))


def _outcome(decoder: AlertDecoder, payload: bytes):
    try:
        return "alert", _key(decoder.decode(payload))
    except DecodeError as exc:
        return "error", exc.reason


def _single_record_payloads(path) -> list[bytes]:
    """Each record of a sample file as its own one-record container (a Kafka message)."""
    data = path.read_bytes()
    header = avro_frame.read_header(data)
    schema = fastavro.parse_schema(json.loads(header.schema_json))
    payloads = []
    for block in avro_frame.iter_blocks(data, header):
        stream = io.BytesIO(block.data)
        for _ in range(block.count):
            start = stream.tell()
            fastavro.schemaless_reader(stream, schema)
            payloads.append(avro_frame.single_record_container(header.schema_json, block.data[start:stream.tell()]))
    return payloads


@pytest.mark.parametrize("keep_cutouts", [False, True])
def test_same_alerts_as_fastavro_on_every_real_sample(every_real_alert_file, keep_cutouts):
    compiled, reference = AlertDecoder(keep_cutouts), AlertDecoder(keep_cutouts, compiled=False)
    surveys = set()
    for path in every_real_alert_file:
        data = path.read_bytes()
        assert compiled.schema_for_text(avro_frame.read_header(data).schema_json).fast is not None, path
        fast = [_key(a) for a in compiled.iter_container(data)]
        assert fast == [_key(a) for a in reference.iter_container(data)], path
        for payload in _single_record_payloads(path):
            alert = compiled.decode(payload)
            assert _key(alert) == _key(reference.decode(payload))
            surveys.add(alert.schema_version)
            if keep_cutouts and alert.survey == "ztf":
                assert alert.extra["cutouts"]["science"][:2] == b"\x1f\x8b"  # gzipped FITS, as bytes
    assert {"3.2", "3.3", "4.02", "lsst.v10_0"} <= surveys


def test_records_equal_fastavro_dicts_field_by_field(every_real_alert_file):
    """Below the converters: the kernel's dicts are fastavro's, value for value and type for type."""
    for path in every_real_alert_file:
        data = path.read_bytes()
        header = avro_frame.read_header(data)
        writer = json.loads(header.schema_json)
        for keep in (False, True):
            reader = reader_schema(writer, keep)
            fast = FastReader(compile_program(writer, reader))
            parsed_writer, parsed_reader = fastavro.parse_schema(writer), fastavro.parse_schema(reader)
            for block in avro_frame.iter_blocks(data, header):
                stream, pos = io.BytesIO(block.data), 0
                for _ in range(block.count):
                    expected = fastavro.schemaless_reader(stream, parsed_writer, parsed_reader)
                    record, pos = fast.read(block.data, pos)
                    assert pos == stream.tell()
                    assert repr(record) == repr(expected), path  # repr: NaN-safe, and int != float


def test_official_rubin_v7_to_v11_and_ztf_schemas():
    import lsst.alert.packet as packet

    fake_times = AlertLimits(future_days=math.inf)  # some fake alerts carry unix seconds as MJD
    compiled, reference = AlertDecoder(limits=fake_times), AlertDecoder(compiled=False, limits=fake_times)
    for version in ("7.0", "8.0", "9.0", "10.0", "11.0"):
        major, minor = version.split(".")
        sample = open(f"{packet.get_schema_path(int(major), int(minor))}/sample_data/fakeAlert.avro", "rb").read()
        assert [_key(a) for a in compiled.iter_container(sample)] == [
            _key(a) for a in reference.iter_container(sample)], version
    for writer in (ztf_schema(), rubin_schema("7.0"), rubin_schema("11.1")):
        compile_program(writer, reader_schema(writer, keep_cutouts=True))  # no fallback needed


def test_wire_and_schemaless_framings(sample_files, tmp_path):
    path = next(p for p in sample_files if p.parent.name == "lsst")
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        schema, records = reader.writer_schema, list(reader)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), records[1])
    body = buffer.getvalue()
    (tmp_path / "3.avsc").write_text(json.dumps(schema))
    wire = b"\x00" + struct.pack(">I", 3) + body
    expected = _key(AlertDecoder(schema=schema, compiled=False).decode(body))
    assert _key(AlertDecoder(schema=schema).decode(body)) == expected
    assert _key(AlertDecoder(schema_dir=tmp_path).decode(wire)) == expected


TOY = {"type": "record", "name": "toy", "fields": [
    {"name": "skipped", "type": {"type": "array", "items": "long"}},
    {"name": "kept", "type": ["null", {"type": "array", "items": {
        "type": "record", "name": "point", "fields": [{"name": "x", "type": "double"},
                                                      {"name": "tag", "type": ["null", "string"]}]}}]},
    {"name": "flag", "type": "boolean"},
]}
TOY_READER = {"type": "record", "name": "toy", "fields": [TOY["fields"][1], TOY["fields"][2]]}


def _varint(value: int) -> bytes:
    return avro_frame.write_long(value)


def _toy_bytes(negative_blocks: bool) -> bytes:
    """Arrays written in two blocks each; with negative counts (count < 0, then byte size)."""
    def block(items: list[bytes]) -> bytes:
        body = b"".join(items)
        if negative_blocks:
            return _varint(-len(items)) + _varint(len(body)) + body
        return _varint(len(items)) + body

    longs = [_varint(v) for v in (1, -2, 300)]
    points = [struct.pack("<d", 1.5) + b"\x00", struct.pack("<d", -2.0) + b"\x02" + _varint(2) + b"ok"]
    return (block(longs[:2]) + block(longs[2:]) + b"\x00" + b"\x02" + block(points[:1]) + block(points[1:])
            + b"\x00" + b"\x01")


@pytest.mark.parametrize("negative_blocks", [False, True])
def test_array_blocks_with_negative_counts(negative_blocks):
    data = _toy_bytes(negative_blocks)
    fast = FastReader(compile_program(TOY, TOY_READER))
    expected = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(TOY), fastavro.parse_schema(TOY_READER))
    assert expected == {"kept": [{"x": 1.5, "tag": None}, {"x": -2.0, "tag": "ok"}], "flag": True}
    assert fast.read(data) == (expected, len(data))


def test_malformed_bytes_give_the_reasons_fastavro_gives():
    fast = FastReader(compile_program(TOY, TOY_READER))
    data = _toy_bytes(False)
    for cut in range(len(data)):
        with pytest.raises(DecodeError) as info:
            fast.read(data[:cut])
        assert info.value.reason == "truncated", cut
    bad_union = data.replace(b"\x00\x02\x02", b"\x00\x06\x02", 1)  # branch 3 of a 2-branch union
    with pytest.raises(DecodeError) as info:
        fast.read(bad_union)
    assert info.value.reason == "invalid_value"
    negative_union = data.replace(b"\x00\x02\x02", b"\x00\x01\x02", 1)  # -1: the last branch, as a list index
    assert fast.read(negative_union)[0]["kept"] == fast.read(data)[0]["kept"]


def test_unsupported_schemas_fall_back_to_fastavro(sample_files):
    recursive = {"type": "record", "name": "node", "fields": [
        {"name": "value", "type": "long"}, {"name": "next", "type": ["null", "node"]}]}
    with pytest.raises(Unsupported):
        compile_program(recursive, recursive)
    stamped = {"type": "record", "name": "t", "fields": [
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    with pytest.raises(Unsupported):
        compile_program(stamped, stamped)
    # A ZTF schema whose kept jd carries a logical type: the decoder still decodes, with fastavro.
    path = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    data = path.read_bytes()
    writer = json.loads(avro_frame.read_header(data).schema_json)
    decoder = AlertDecoder()
    assert decoder.schema_for_text(json.dumps(writer).encode()).fast is not None
    candidate = next(f for f in writer["fields"] if f["name"] == "candidate")["type"]
    next(f for f in candidate["fields"] if f["name"] == "candid")["type"] = {"type": "long", "logicalType": "x-id"}
    schema = decoder.schema_for_text(json.dumps(writer).encode())
    assert schema.fast is None
    header = avro_frame.read_header(data)
    payload = avro_frame.header_bytes(json.dumps(writer).encode(), header.sync) + data[header.end:]
    assert _key(decoder.decode(payload)) == _key(AlertDecoder(compiled=False).decode(data))


def test_threads_decode_in_parallel(sample_files):
    payloads = [p for path in sample_files if path.parent.name == "ztf" for p in _single_record_payloads(path)]
    decoder = AlertDecoder()
    expected = [_key(decoder.decode(p)) for p in payloads]
    results: dict[int, list] = {}

    def work(index: int) -> None:
        results[index] = [_key(decoder.decode(p)) for p in payloads * 3]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == expected * 3 for i in range(4))


_SAMPLES = Path(__file__).resolve().parents[2] / "data" / "alerts"
_SEEDS = [(_SAMPLES / "ztf" / "472263571115115000.avro").read_bytes(),
          _single_record_payloads(_SAMPLES / "lsst" / "lsst_v10_fink_sample.avro")[0]]
_BODY_STARTS = [avro_frame.read_header(seed).end for seed in _SEEDS]
_COMPILED, _REFERENCE = AlertDecoder(), AlertDecoder(compiled=False)


@given(st.integers(0, len(_SEEDS) - 1), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                                 min_size=1, max_size=6), st.floats(0, 1))
def test_mutated_alerts_decode_alike(which, mutations, cut):
    """Flipped bytes in the record of a (cut) real alert, ZTF or Rubin: both paths give the
    same alert, or reject it with the same reason."""
    seed, start = _SEEDS[which], _BODY_STARTS[which]
    payload = bytearray(seed[: start + int(cut * (len(seed) - start))] if cut < 0.5 else seed)
    for fraction, value in mutations:
        position = start + int(fraction * (len(seed) - start))
        if position < len(payload):
            payload[position] = value
    assert _outcome(_COMPILED, bytes(payload)) == _outcome(_REFERENCE, bytes(payload))


def test_without_numba_the_decoder_falls_back_to_fastavro(monkeypatch, sample_files):
    import broker_filter.streams.codec as codec

    monkeypatch.setattr(codec, "_fast_reader_class", lambda: None)  # what a failed numba import returns
    path = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    decoder = AlertDecoder()
    alert = decoder.decode(path.read_bytes())
    assert decoder.schema_for_text(avro_frame.read_header(path.read_bytes()).schema_json).fast is None
    assert _key(alert) == _key(AlertDecoder(compiled=False).decode(path.read_bytes()))
