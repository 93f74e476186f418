"""The file sinks write what they are given, and read back."""

from __future__ import annotations

import json

import fastavro
import pyarrow.parquet as pq

from broker_filter.streams.sinks import AvroSink, JsonlSink, ParquetSink, Sink

RECORDS = [{"object_id": f"ZTF{i}", "score": i / 3, "flag": i % 2 == 0} for i in range(5)]
SCHEMA = {"type": "record", "name": "out", "fields": [
    {"name": "object_id", "type": "string"}, {"name": "score", "type": "double"}, {"name": "flag", "type": "boolean"}]}


def test_jsonl(tmp_path):
    with JsonlSink(tmp_path / "o.jsonl") as sink:
        assert isinstance(sink, Sink)
        for record in RECORDS:
            sink.write(record)
        sink.write({"object_id": "nan", "score": float("nan"), "flag": True})
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert lines[:5] == RECORDS and lines[5]["score"] is None


def test_avro(tmp_path):
    with AvroSink(tmp_path / "o.avro", SCHEMA) as sink:
        for record in RECORDS:
            sink.write(record)
    with open(tmp_path / "o.avro", "rb") as handle:
        assert list(fastavro.reader(handle)) == RECORDS


def test_parquet_row_groups(tmp_path):
    with ParquetSink(tmp_path / "o.parquet", row_group_size=2) as sink:
        for record in RECORDS:
            sink.write(record)
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.to_pylist() == RECORDS
    assert pq.ParquetFile(tmp_path / "o.parquet").num_row_groups == 3
