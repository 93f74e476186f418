"""The file sink writes what it is given, and reads back."""

from __future__ import annotations

import json

from broker_filter.streams.sinks import JsonlSink, Sink

RECORDS = [{"object_id": f"ZTF{i}", "score": i / 3, "flag": i % 2 == 0} for i in range(5)]


def test_jsonl(tmp_path):
    with JsonlSink(tmp_path / "o.jsonl") as sink:
        assert isinstance(sink, Sink)
        for record in RECORDS:
            sink.write(record)
        sink.write({"object_id": "nan", "score": float("nan"), "flag": True})
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert lines[:5] == RECORDS and lines[5]["score"] is None
