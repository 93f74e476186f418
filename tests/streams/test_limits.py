"""One hostile message, one typed dead-letter reason: physical limits and the decoding boundary.

Each case is a real ZTF or Rubin alert (data/alerts) with one value made absurd; before these
limits several of them crashed the daemon (OverflowError, RecursionError, TypeError: a
restart loop on the same message) or were scored as stars.
"""

from __future__ import annotations

import copy
import io
import json
import math

import fastavro
import pytest

from broker_filter.streams import avro_frame
from broker_filter.streams.alert import DecodeError
from broker_filter.streams.archive import iter_container_items
from broker_filter.streams.codec import MAX_SCHEMA_DEPTH, AlertDecoder, from_record
from broker_filter.streams.limits import AlertLimits, mjd_now
from broker_filter.streams.ztf import dc_magnitude


def _read(path):
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, list(reader)


@pytest.fixture(scope="module")
def ztf(sample_files):
    return _read(next(p for p in sample_files if p.name.startswith("ztf_4.02")))


@pytest.fixture(scope="module")
def rubin(sample_files):
    return _read(next(p for p in sample_files if p.parent.name == "lsst"))


def _container(schema, record) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(copy.deepcopy(schema)), [record])
    return buffer.getvalue()


def _raw_schema_container(schema_json: bytes, record_bytes: bytes = b"\x00") -> bytes:
    return avro_frame.single_record_container(schema_json, record_bytes)


def _ztf_with(ztf, change) -> bytes:
    schema, records = ztf
    record = copy.deepcopy(records[0])
    change(record)
    return _container(schema, record)


def _reason(payload: bytes, decoder: AlertDecoder | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        (decoder or AlertDecoder()).decode(payload)
    return info.value.reason


def _nested(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def _first_prv(record, key, value, upper_limit=False):
    for point in record["prv_candidates"]:
        if (point["candid"] is None) == upper_limit:
            point[key] = value
            return
    raise AssertionError("no such history point")


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("trigger magpsf -1000", lambda r: r["candidate"].update(magpsf=-1000.0, magnr=None, isdiffpos="t"), "magnitude_out_of_range"),
        ("trigger magpsf -1000 with a reference", lambda r: r["candidate"].update(magpsf=-1000.0, magnr=15.0, sigmagnr=0.01, distnr=0.1),
         "magnitude_out_of_range"),
        ("history magnr -1000", lambda r: _first_prv(r, "magnr", -1000.0) or _first_prv(r, "distnr", 0.1), "magnitude_out_of_range"),
        ("trigger magpsf 1e30, no reference", lambda r: r["candidate"].update(magpsf=1e30, magnr=None, isdiffpos="t"),
         "magnitude_out_of_range"),
        ("upper limit at jd 1e304", lambda r: _first_prv(r, "jd", 1e304, upper_limit=True), "time_out_of_range"),
        ("trigger at MJD 1e12", lambda r: r["candidate"].update(jd=1e12 + 2400000.5), "time_out_of_range"),
        ("trigger at a negative MJD", lambda r: r["candidate"].update(jd=-5.0), "time_out_of_range"),
        ("trigger a year ahead of now", lambda r: r["candidate"].update(jd=mjd_now() + 365 + 2400000.5), "time_out_of_range"),
        ("objectId of 450 KB", lambda r: r.update(objectId="Z" * 450_000), "too_long"),
    ],
)
def test_an_absurd_value_in_a_ztf_alert_is_a_typed_decode_error(ztf, name, change, reason):
    if not any(p["candid"] is None for p in ztf[1][0]["prv_candidates"]) and "upper limit" in name:
        pytest.skip("the sample alert has no upper limit")
    assert _reason(_ztf_with(ztf, change)) == reason, name


def test_a_rubin_band_name_of_a_megabyte_is_too_long(rubin):
    schema, records = rubin
    record = copy.deepcopy(records[0])
    record["diaSource"]["band"] = "r" * 1_100_000
    assert _reason(_container(schema, record)) == "too_long"


def test_a_huge_rubin_flux_is_a_magnitude_out_of_range(rubin):
    schema, records = rubin
    record = copy.deepcopy(records[0])
    record["diaSource"]["scienceFlux"] = 1e37  # float32: 31.4 - 2.5 * 37 = -61 mag
    assert _reason(_container(schema, record)) == "magnitude_out_of_range"


def test_limits_come_from_the_config_and_a_wider_window_accepts(ztf):
    payload = _ztf_with(ztf, lambda r: r["candidate"].update(jd=30000.0 + 2400000.5))
    assert _reason(payload) == "time_out_of_range"
    assert AlertDecoder(limits=AlertLimits(min_mjd=0.0)).decode(payload).time == pytest.approx(30000.0)


def test_dc_magnitude_never_overflows():
    mag, err, corrected = dc_magnitude(-1000.0, 0.1, 15.0, 0.01, True)
    assert mag == -1000.0 and math.isnan(err) and corrected


@pytest.mark.parametrize(
    ("name", "schema_json", "reason"),
    [
        ("nested 50,000 levels", b"[" * 50_000 + b"]" * 50_000, "bad_schema"),
        (f"nested {MAX_SCHEMA_DEPTH + 10} levels", json.dumps(
            {"type": "record", "name": "a", "fields": [{"name": "f", "type": _nested(["int"], MAX_SCHEMA_DEPTH + 10)}]}).encode(),
         "bad_schema"),
        ("fields null", json.dumps({"type": "record", "name": "alert", "fields": None}).encode(), "bad_schema"),
        ("a field name that is a list", json.dumps({"type": "record", "name": "alert", "fields": [{"name": ["objectId"], "type": "string"}]}).encode(),
         "bad_schema"),
        ("a schema name of 600 KB", json.dumps({"type": "record", "name": "n" * 600_000, "fields": []}).encode(), "unknown_schema"),
        ("a schema of 2 MB", json.dumps({"type": "record", "name": "big", "doc": "d" * 2_000_000, "fields": []}).encode(), "bad_schema"),
    ],
)
def test_a_hostile_container_schema_is_a_typed_decode_error_on_every_path(name, schema_json, reason, tmp_path):
    payload = _raw_schema_container(schema_json)
    assert _reason(payload) == reason, name
    (item,) = list(iter_container_items("hostile.avro", payload, AlertDecoder()))  # the archive path: replay, inspect, produce
    assert item.alert is None and item.error.reason == reason, name
    assert len(str(item.error)) < 2000  # the detail stays short enough for a dead-letter header


def test_from_record_applies_the_limits_and_the_boundary(ztf):
    record = copy.deepcopy(ztf[1][0])
    record["candidate"]["magpsf"] = -1000.0
    with pytest.raises(DecodeError) as info:
        from_record(record, "4.02")
    assert info.value.reason == "magnitude_out_of_range"
    record["prv_candidates"] = 7  # not a list: TypeError deep in the converter
    with pytest.raises(DecodeError):
        from_record(record, "4.02")


def test_any_exception_inside_decoding_becomes_a_decode_error(ztf, monkeypatch):
    """The boundary is by construction: an exception of any type in a converter is a dead letter, not a crash."""
    import broker_filter.streams.codec as codec

    def broken(record, version):
        raise ZeroDivisionError("a bug or a hostile value we did not foresee")

    monkeypatch.setitem(codec._CONVERTERS, "ztf", broken)
    schema, records = ztf
    with pytest.raises(DecodeError) as info:
        AlertDecoder().decode(_container(schema, records[0]))
    assert info.value.reason == "invalid_value" and "ZeroDivisionError" in info.value.detail


def _bomb(codec: str, size: int) -> bytes:
    """A compressed block of ``size`` zero bytes (a few KB for 100 MB)."""
    import bz2
    import lzma
    import zlib

    import cramjam

    raw = bytes(size)
    if codec == "deflate":
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(raw) + packer.flush()
    if codec == "bzip2":
        return bz2.compress(raw)
    if codec == "xz":
        return lzma.compress(raw)
    if codec == "zstandard":
        return bytes(cramjam.zstd.compress(raw))
    if codec == "snappy":
        return bytes(cramjam.snappy.compress_raw(raw)) + b"\x00\x00\x00\x00"
    raise ValueError(codec)


@pytest.mark.parametrize("codec", ["deflate", "bzip2", "xz", "zstandard", "snappy"])
def test_a_decompression_bomb_is_cut_off_at_the_limit_not_inflated(codec):
    import resource

    limit = 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError) as info:
        avro_frame.decompress(codec, _bomb(codec, 100 * 1024 * 1024), max_bytes=limit)
    assert info.value.reason == "too_large"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 150, f"{codec}: peak memory grew {grown_mb:.0f} MB"  # the bomb itself is built above (100 MB raw)
    assert avro_frame.decompress(codec, _bomb(codec, limit), max_bytes=limit) == bytes(limit)


def test_zstd_frames_without_a_declared_size_are_bounded_too():
    import cramjam

    compressor = cramjam.zstd.Compressor()
    compressor.compress(bytes(10 * 1024 * 1024))
    streamed = bytes(compressor.finish())
    with pytest.raises(DecodeError, match="too_large"):
        avro_frame.decompress("zstandard", streamed, max_bytes=1024 * 1024)


def test_a_message_of_many_records_is_refused_without_decoding_them(ztf, monkeypatch):
    schema, records = ztf
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(copy.deepcopy(schema)), [records[0]] * 200, codec="deflate")
    decoded = []
    monkeypatch.setattr(AlertDecoder, "convert", lambda self, record, parsed: decoded.append(record))
    with pytest.raises(DecodeError, match="holds more than 1"):
        AlertDecoder().decode(buffer.getvalue())
    assert decoded == []  # refused from the block headers: no record was read
