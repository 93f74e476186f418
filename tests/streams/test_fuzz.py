"""Random and mutated bytes never raise anything but DecodeError (hypothesis)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_filter.streams.alert import DecodeError
from broker_filter.streams.codec import AlertDecoder

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SAMPLE = (Path(__file__).resolve().parents[2] / "data" / "alerts" / "ztf" / "472263571115115000.avro").read_bytes()
DECODER = AlertDecoder()
SCHEMALESS = AlertDecoder(schema=DECODER.schema_for_text(__import__("broker_filter.streams.avro_frame", fromlist=["x"]).read_header(SAMPLE).schema_json).raw)


def _decode_or_error(decoder: AlertDecoder, payload: bytes) -> None:
    try:
        decoder.decode(payload)
    except DecodeError as exc:
        assert exc.reason in DecodeError.REASONS


@given(st.binary(max_size=2048))
def test_random_bytes(payload):
    _decode_or_error(DECODER, payload)
    _decode_or_error(SCHEMALESS, payload)


@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(SAMPLE)))
def test_mutated_real_alert(mutations, cut):
    payload = bytearray(SAMPLE[:cut] if cut > 4 else SAMPLE)
    for position, value in mutations:
        if position < len(payload):
            payload[position] = value
    _decode_or_error(DECODER, bytes(payload))
