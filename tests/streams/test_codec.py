"""AlertDecoder on real alerts: every framing, both surveys, the photometry formulas."""

from __future__ import annotations

import io
import json
import math
import struct
import time

import fastavro
import pytest

from broker_filter.streams import avro_frame
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.codec import AlertDecoder, SchemaRegistryUnavailable, from_record
from broker_filter.streams.limits import AlertLimits
from broker_filter.streams.schema import reader_schema, rubin_schema, ztf_schema
from broker_filter.streams.ztf import dc_magnitude


def _records(path):
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, list(reader)


def test_every_real_sample_decodes(every_real_alert_file):
    decoder = AlertDecoder()
    surveys = set()
    for path in every_real_alert_file:
        alerts = list(decoder.iter_container(path.read_bytes()))
        _, records = _records(path)
        assert len(alerts) == len(records), path
        for alert in alerts:
            assert isinstance(alert, Alert)
            assert math.isfinite(alert.time) and alert.trigger.band
            assert [d.time for d in alert.detections] == sorted(d.time for d in alert.detections)
            assert len({d.detection_id for d in alert.detections}) == len(alert.detections)
            surveys.add((alert.survey, alert.schema_version))
    assert {s for s, _ in surveys} == {"ztf", "lsst"}
    assert {"3.2", "3.3", "4.02", "lsst.v10_0"} <= {v for _, v in surveys}


def test_ztf_fields_and_dc_magnitude(sample_files):
    path = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    _, (record,) = _records(path)
    alert = AlertDecoder().decode(path.read_bytes())
    cand = record["candidate"]
    assert alert.object_id == record["objectId"] == "ZTF17aaacxxf"
    assert alert.alert_id == record["candid"] and alert.trigger_id == cand["candid"]
    assert alert.time == pytest.approx(cand["jd"] - 2400000.5)
    assert alert.trigger.band == {1: "g", 2: "r", 3: "i"}[cand["fid"]]
    ref, diff = 10 ** (-0.4 * cand["magnr"]), 10 ** (-0.4 * cand["magpsf"]) * (1 if cand["isdiffpos"] == "t" else -1)
    assert alert.trigger.mag == pytest.approx(-2.5 * math.log10(ref + diff))
    limits = [p for p in record["prv_candidates"] if p["candid"] is None]
    assert sum(d.upper_limit for d in alert.detections) == len(limits) > 0
    assert all(math.isnan(d.mag) and d.detection_id < 0 for d in alert.detections if d.upper_limit)
    assert alert.extra["dc_corrected"] is True


def test_dc_magnitude_formula():
    mag, err, corrected = dc_magnitude(17.0, 0.05, 15.0, 0.02, positive=True)
    assert corrected and mag < 15.0  # brighter than the reference
    assert dc_magnitude(17.0, 0.05, 15.0, 0.02, positive=False)[0] > 15.0
    assert dc_magnitude(17.0, 0.05, math.nan, math.nan, positive=True)[:2] == (17.0, 0.05)
    assert math.isnan(dc_magnitude(15.0, 0.05, 16.0, 0.02, positive=False)[0])  # negative total flux


def test_rubin_flux_to_ab_mag_and_forced(sample_files):
    path = next(p for p in sample_files if p.parent.name == "lsst")
    schema, records = _records(path)
    alerts = list(AlertDecoder().iter_container(path.read_bytes()))
    first, record = alerts[0], records[0]
    src = record["diaSource"]
    assert first.object_id == str(record["diaObject"]["diaObjectId"])
    assert first.alert_id == record["diaSourceId"]
    assert first.time == src["midpointMjdTai"]
    assert first.trigger.mag == pytest.approx(-2.5 * math.log10(src["scienceFlux"]) + 31.4)
    assert first.trigger.flux == pytest.approx(src["scienceFlux"])
    assert sum(d.forced for d in first.detections) == len(record["prvDiaForcedSources"])
    solar = next(a for a, r in zip(alerts, records) if not r["diaSource"]["diaObjectId"])
    assert solar.object_id.startswith("ss")


def test_keep_cutouts(sample_files):
    path = next(p for p in sample_files if p.name.startswith("472263571115115000"))
    assert "cutouts" not in AlertDecoder().decode(path.read_bytes()).extra
    cutouts = AlertDecoder(keep_cutouts=True).decode(path.read_bytes()).extra["cutouts"]
    assert set(cutouts) == {"science", "template", "difference"}
    assert all(stamp[:2] == b"\x1f\x8b" for stamp in cutouts.values())  # gzipped FITS


def test_reader_schema_drops_cutouts_and_unused_columns():
    for writer in (ztf_schema(), rubin_schema("7.0"), rubin_schema("11.1")):
        names = json.dumps(reader_schema(writer, keep_cutouts=False))
        assert "cutoutScience" not in names
        fastavro.parse_schema(reader_schema(writer, keep_cutouts=False))
        assert "cutoutScience" in json.dumps(reader_schema(writer, keep_cutouts=True))
    assert "sgscore1" not in json.dumps(reader_schema(ztf_schema(), keep_cutouts=False))


def _schemaless(schema, record) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def test_schemaless_and_wire_format_match_container(sample_files, tmp_path):
    path = next(p for p in sample_files if p.parent.name == "lsst")
    schema, records = _records(path)
    expected = list(AlertDecoder().iter_container(path.read_bytes()))[0]
    body = _schemaless(schema, records[0])
    assert AlertDecoder(schema=schema).decode(body) == expected
    (tmp_path / "7.avsc").write_text(json.dumps(schema))
    wire = b"\x00" + struct.pack(">I", 7) + body
    assert AlertDecoder(schema_dir=tmp_path).decode(wire) == expected
    with pytest.raises(DecodeError) as info:
        AlertDecoder(schema_dir=tmp_path).decode(b"\x00" + struct.pack(">I", 8) + body)
    assert info.value.reason == "unknown_schema"


def test_registry_unreachable_is_not_the_messages_fault(sample_files):
    """A valid wire-format alert whose registry does not answer is retried later, never a dead letter."""
    body = b"\x00" + struct.pack(">I", 1) + b"\x02abc"
    decoder = AlertDecoder(registry_url="http://127.0.0.1:9")
    with pytest.raises(SchemaRegistryUnavailable) as info:
        decoder.decode(body)
    assert info.value.retry_in == 1.0
    started = time.monotonic()
    with pytest.raises(SchemaRegistryUnavailable, match="retrying in"):  # the circuit is open: no network call
        decoder.decode(body)
    assert time.monotonic() - started < 0.05


def test_registry_outage_then_recovery_with_a_doubling_backoff(sample_files, monkeypatch):
    from broker_filter.streams import codec
    from broker_filter_proving.schema_registry import LocalSchemaRegistry

    path = next(p for p in sample_files if p.parent.name == "lsst")
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        schema, record = reader.writer_schema, next(iter(reader))
    wire = b"\x00" + struct.pack(">I", 3) + _schemaless(schema, record)
    clock = [1000.0]
    monkeypatch.setattr(codec.time, "monotonic", lambda: clock[0])
    with LocalSchemaRegistry({3: schema}) as registry:
        decoder = AlertDecoder(registry_url=registry.url)
        registry.down()
        waits = []
        for _ in range(3):
            with pytest.raises(SchemaRegistryUnavailable) as info:
                decoder.decode(wire)
            waits.append(info.value.retry_in)
            clock[0] += info.value.retry_in
        assert waits == [1.0, 2.0, 4.0] and registry.requests == 3
        registry.up()
        assert decoder.decode(wire).survey == "lsst"
        with pytest.raises(DecodeError) as unknown:  # an id the registry does not hold is the message's fault
            decoder.decode(b"\x00" + struct.pack(">I", 99) + b"\x02")
        assert unknown.value.reason == "unknown_schema"


def test_real_rubin_schemas_v7_to_v11_decode():
    import lsst.alert.packet as packet

    for version in ("7.0", "8.0", "9.0", "10.0", "11.0"):
        major, minor = version.split(".")
        sample = f"{packet.get_schema_path(int(major), int(minor))}/sample_data/fakeAlert.avro"
        data = open(sample, "rb").read()
        # some of the package's fake alerts carry unix seconds as MJD, which the default limits refuse
        alerts = list(AlertDecoder(limits=AlertLimits(future_days=math.inf)).iter_container(data))
        assert alerts and all(a.survey == "lsst" for a in alerts), version
        assert alerts[0].schema_version == f"lsst.v{major}_{minor}"


def test_one_record_container_round_trip(sample_files):
    path = next(p for p in sample_files if p.name.startswith("ztf_4.02"))
    decoder = AlertDecoder()
    header = avro_frame.read_header(path.read_bytes())
    assert header.codec == "deflate"
    schema, records = _records(path)
    payload = avro_frame.single_record_container(json.dumps(schema).encode(), _schemaless(schema, records[1]))
    assert decoder.decode(payload) == list(decoder.iter_container(path.read_bytes()))[1]
    with pytest.raises(DecodeError) as info:
        decoder.decode(path.read_bytes())  # 12 alerts are not one Kafka message
    assert info.value.reason == "invalid_value"


def test_from_record_equals_decoding_the_bytes(sample_files):
    path = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    _, (record,) = _records(path)
    alert = from_record(record, "3.2")
    assert alert == AlertDecoder().decode(path.read_bytes())


@pytest.mark.parametrize("payload,reason", [
    (b"", "empty"),
    (b"garbage bytes that are not avro", "not_avro"),
    (b"Obj\x01\x04", "truncated"),
])
def test_bad_bytes(payload, reason):
    with pytest.raises(DecodeError) as info:
        AlertDecoder().decode(payload)
    assert info.value.reason == reason


def test_missing_field_and_nan_magnitude(sample_files):
    path = next(p for p in sample_files if p.name.startswith("2019_01_10"))
    schema, (record,) = _records(path)
    broken = dict(record, candidate=dict(record["candidate"], magpsf=float("nan")))
    with pytest.raises(DecodeError) as info:
        from_record(broken, "3.2")
    assert info.value.reason == "invalid_value"
    with pytest.raises(DecodeError) as info:
        from_record({k: v for k, v in record.items() if k != "candidate"}, "3.2")
    assert info.value.reason == "missing_field"
    truncated = path.read_bytes()[: len(path.read_bytes()) // 2]
    with pytest.raises(DecodeError):
        AlertDecoder().decode(truncated)
    unknown = {"type": "record", "name": "other", "fields": [{"name": "x", "type": "long"}]}
    with pytest.raises(DecodeError) as info:
        AlertDecoder().decode(avro_frame.single_record_container(json.dumps(unknown).encode(), b"\x02"))
    assert info.value.reason == "unknown_schema"


@pytest.mark.parametrize("behaviour", ["drip", "huge"])
def test_a_registry_that_drips_or_floods_is_cut_off(behaviour, monkeypatch):
    """A total deadline per call and a size cap: neither a byte every 0.2 s nor 400 MB stalls or swells the decoder."""
    from broker_filter.streams import codec
    from broker_filter_proving.schema_registry import LocalSchemaRegistry

    monkeypatch.setattr(codec, "REGISTRY_DEADLINE_S", 1.0)
    with LocalSchemaRegistry({}) as registry:
        registry.behaviour, registry.drip_s = behaviour, 0.2
        started = time.monotonic()
        with pytest.raises(SchemaRegistryUnavailable, match="within 1 s" if behaviour == "drip" else "answer over"):
            AlertDecoder(registry_url=registry.url).decode(b"\x00" + struct.pack(">I", 5) + b"\x02")
        assert time.monotonic() - started < 5


def test_an_id_the_registry_lacks_is_asked_once_a_minute_not_once_a_message():
    from broker_filter_proving.schema_registry import LocalSchemaRegistry

    with LocalSchemaRegistry({}) as registry:
        decoder = AlertDecoder(registry_url=registry.url)
        for _ in range(20):
            with pytest.raises(DecodeError, match="unknown_schema"):
                decoder.decode(b"\x00" + struct.pack(">I", 77) + b"\x02")
        assert registry.requests == 1
