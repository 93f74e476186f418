"""``broker-filter bench decode``: ZTF 4.02 alerts decoded per second on one core.

Payloads are real alerts (the committed ZTF 4.02 sample re-framed as the official 4.02
schema, cutouts included, one one-record container file per alert as ZTF sends them on
Kafka). Rows, all in this process on one core:

* ``fastavro.reader`` per message, every field: what a consumer does without this package;
* ``AlertDecoder(keep_cutouts=True)``: our decoder reading every field it maps plus cutouts;
* ``AlertDecoder(keep_cutouts=False)``: the projected reader schema that skips cutouts and
  the unused columns.

Speedup = skip / full (the last two rows).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

from broker_filter.bench.report import BenchResult

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "alerts" / "ztf" / "ztf_4.02_fink_sample.avro"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row (default 3)")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="an Avro file of ZTF 4.x alerts")


def official_payloads(sample: Path) -> list[bytes]:
    """Re-frame each record in the official ZTF 4.02 schema, one container per alert."""
    import fastavro

    from streams.schema import ztf_schema

    schema = ztf_schema()
    parsed = fastavro.parse_schema(schema)
    names = {f["name"]: f for f in schema["fields"]}
    candidate_fields = [f["name"] for f in names["candidate"]["type"]["fields"]]
    prv_fields = [f["name"] for f in names["prv_candidates"]["type"][1]["items"]["fields"]]
    with sample.open("rb") as handle:
        records = list(fastavro.reader(handle))
    payloads = []
    for rec in records:
        alert = {name: rec.get(name) for name in names}
        alert["candidate"] = {k: rec["candidate"].get(k) for k in candidate_fields}
        alert["prv_candidates"] = [{k: p.get(k) for k in prv_fields} for p in rec.get("prv_candidates") or []]
        alert["fp_hists"] = None
        buffer = io.BytesIO()
        fastavro.writer(buffer, parsed, [alert])
        payloads.append(buffer.getvalue())
    return payloads


def _rate(decode: Callable[[bytes], object], payloads: list[bytes], seconds: float) -> float:
    for payload in payloads:  # warm caches (parsed schemas) outside the timing
        decode(payload)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for payload in payloads:
            decode(payload)
        count += len(payloads)
    return count / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> BenchResult:
    import fastavro

    from streams.codec import AlertDecoder

    payloads = official_payloads(args.sample)
    full = AlertDecoder(keep_cutouts=True)
    skip = AlertDecoder(keep_cutouts=False)
    rows = []
    naive = _rate(lambda p: list(fastavro.reader(io.BytesIO(p))), payloads, args.seconds)
    rows.append(["fastavro.reader per message, all fields (no Alert)", naive, 1.0])
    full_rate = _rate(full.decode, payloads, args.seconds)
    rows.append(["AlertDecoder(keep_cutouts=True) -> Alert", full_rate, full_rate / naive])
    skip_rate = _rate(skip.decode, payloads, args.seconds)
    rows.append(["AlertDecoder(keep_cutouts=False) -> Alert", skip_rate, skip_rate / naive])
    mean_size = sum(map(len, payloads)) / len(payloads)
    return BenchResult(
        name="decode",
        columns=["decoder", "alerts/s (1 core)", "vs fastavro.reader"],
        rows=rows,
        speedup=skip_rate / full_rate,
        notes=[f"{len(payloads)} real ZTF 4.02 alerts, mean {mean_size / 1024:.0f} KiB with cutouts; "
               f"{args.seconds:.0f} s per row; speedup = keep_cutouts=False / keep_cutouts=True"],
        extra={"alerts": len(payloads), "mean_payload_bytes": mean_size},
    )
