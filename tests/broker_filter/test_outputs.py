"""Output records: Avro round trip with the committed schemas, deterministic keys, dead letters kept whole."""

from __future__ import annotations

import fastavro
import pytest

from broker_filter.outputs import DeadLetter, ModelIdentity, classification_record, decode, encode, novelty_record
from broker_filter.streams.alert import Alert, DecodeError, Detection

MODEL = ModelIdentity("0123456789abcdef", "0.1.0", "p95", 12.5)
ALERT = Alert("ZTF18aaaaaaa", 42, "ztf", "4.02", 7, (Detection(7, 60000.5, "g", 15.0, 0.05),))


def _scored(energy: float, p_value: float = 0.01, alert: Alert = ALERT) -> dict:
    return classification_record(
        alert,
        status="scored",
        model=MODEL,
        min_points=20,
        n_points=33,
        bands_used=("g",),
        probabilities={"RRAB": 0.9, "ECL": 0.1},
        top_class="RRAB",
        energy=energy,
        novel=p_value <= 0.05,
        p_value=p_value,
        threshold_energy=12.5,
        timestamp_ms=5,
        now_ms=6,
    )


def test_scored_record_round_trips_and_carries_the_novelty_p_value():
    record = _scored(13.0)
    assert record["record_id"] == "ztf:ZTF18aaaaaaa:42" and record["novel"] is True
    assert record["novelty_threshold_percentile"] == 95 and record["schema_version"] == 3
    assert (record["classifier"], record["alerce_class"], record["elasticc_class_id"]) == ("rnn-autoencoder-gmm", "RRL", 2323)
    assert record["software_version"] and record["ra"] is None  # the test alert has no position
    assert record["novelty_p_value"] == 0.01 and record["novelty_threshold_energy"] == 12.5
    assert decode("classification", encode("classification", record)) == record
    novelty = novelty_record(record)
    assert decode("novelty", encode("novelty", novelty)) == novelty
    assert _scored(12.0, p_value=0.3)["novel"] is False


def test_below_minimum_record_has_no_scores():
    record = classification_record(
        ALERT, status="below_minimum", model=MODEL, min_points=20, n_points=3, timestamp_ms=None, now_ms=1
    )
    assert record["probabilities"] is None and record["novel"] is None
    assert decode("classification", encode("classification", record)) == record


def test_schema_rejects_an_unknown_status():
    record = _scored(1.0) | {"status": "maybe"}
    with pytest.raises((ValueError, fastavro.validation.ValidationError)):
        encode("classification", record)


def test_dead_letter_keeps_bytes_and_reason():
    letter = DeadLetter.of("t[0]@5", DecodeError("not_avro", "garbage"), b"\x01\x02")
    assert encode("dead_letter", letter) == b"\x01\x02"
    assert dict(letter.headers())["reason"] == b"not_avro"
    assert letter.to_json()["payload_base64"] == "AQI="


def test_an_oversized_dead_letter_is_cut_to_fit_and_says_so():
    letter = DeadLetter("t[0]@9", "too_large", "", b"x" * 100)
    assert letter.fitting(200) is letter
    cut = letter.fitting(10)
    assert cut.payload == b"x" * 10 and dict(cut.headers())["original_size"] == b"100"


def test_an_input_whose_record_is_too_large_for_the_brokers_becomes_one_dead_letter():
    """A 450 KB object id makes records over the message limit: they would abort every retry of the batch."""
    from broker_filter.outputs import OUTPUT_TOO_LARGE, Output, encode_all

    huge = Alert("Z" * 450_000, 43, "ztf", "4.02", 8, (Detection(8, 60000.5, "g", 15.0, 0.05),))
    big = _scored(13.0, alert=huge)
    small = _scored(13.0)
    outputs = [
        Output("classification", small["record_id"], small, "alerts[0]@1"),
        Output("classification", big["record_id"], big, "alerts[0]@2"),
        Output("novelty", big["record_id"], novelty_record(big), "alerts[0]@2"),
        Output("novelty", small["record_id"], novelty_record(small), "alerts[0]@1"),
    ]
    encoded = encode_all(outputs, max_bytes=100_000)
    assert [(e.kind, e.key) for e in encoded] == [
        ("classification", small["record_id"]), ("dead_letter", "alerts[0]@2"), ("novelty", small["record_id"])]
    letter = dict(encoded[1].headers)
    assert letter["reason"] == OUTPUT_TOO_LARGE.encode() and letter["origin"] == b"alerts[0]@2"
    assert b"exceeds the 100000-byte message limit" in letter["detail"]
    assert len(encoded[1].value) <= 100_000 and int(letter["original_size"]) > 450_000
    assert encode_all(outputs[:1], max_bytes=100_000)[0].value == encode("classification", small)


def test_dead_letter_headers_are_short_and_mask_url_credentials():
    letter = DeadLetter("alerts[1]@9", "schema_registry", "http://reader:s3cret@registry:8081/schemas/ids/3: " + "x" * 5000, b"\x00")
    headers = dict(letter.headers())
    assert b"s3cret" not in headers["detail"] and b"http://***@registry:8081" in headers["detail"]
    assert len(headers["detail"]) < 1100
    assert "s3cret" not in str(letter.to_json())


def test_records_carry_the_alerts_position_and_every_class_maps_into_both_taxonomies():
    from broker_filter.model.classes import PAPER_CLASSES
    from broker_filter.model.taxonomy import ALERCE, ELASTICC

    placed = Alert("ZTF18aaaaaaa", 42, "ztf", "4.02", 7, (Detection(7, 60000.5, "g", 15.0, 0.05),), ra=123.25, dec=-4.5)
    record = _scored(13.0, alert=placed)
    assert (record["ra"], record["dec"]) == (123.25, -4.5)
    assert decode("classification", encode("classification", record)) == record
    assert set(PAPER_CLASSES) == set(ALERCE) == set(ELASTICC)
    below = classification_record(placed, status="below_minimum", model=MODEL, min_points=20, n_points=3, timestamp_ms=5, now_ms=6)
    assert below["alerce_class"] is None and below["elasticc_class_id"] is None
