"""``broker-filter bench decode``: ZTF 4.02 alerts decoded per second on one core.

Payloads are real alerts (the committed ZTF 4.02 sample re-framed as the official 4.02
schema, cutouts included, one one-record container file per alert as ZTF sends them on
Kafka). Rows, all in this process on one core, in alerts per CPU-second of the process,
measured in interleaved rounds (the median round counts) so that a busy machine slows every
row alike:

* ``fastavro.reader`` per message, every field: what a consumer does without this package;
* ``AlertDecoder(keep_cutouts=True, compiled=False)``: fastavro reading every field it maps
  plus the cutouts — the *full* decode, and the baseline of ``speedup``;
* ``AlertDecoder(keep_cutouts=False, compiled=False)``: fastavro with the projected reader
  schema that skips cutouts and unused columns;
* ``AlertDecoder(keep_cutouts=True)``: the compiled program (numba), cutouts kept as bytes;
* ``AlertDecoder(keep_cutouts=False)``: the compiled program skipping them — the default.

``speedup`` = the last row / the second (compiled skipping decoder against fastavro's full
decode); the notes also give the compiled path's own skip / keep ratio, and the time of the
first decode in a fresh process with numba's on-disk cache warm and cold (the JIT cost).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from broker_filter_proving import REPO
from broker_filter_proving.bench.report import BenchResult

SAMPLE = REPO / "data" / "alerts" / "ztf" / "ztf_4.02_fink_sample.avro"
_FIRST_DECODE = """
import sys, time
from broker_filter_proving.bench.decode import official_payloads
from pathlib import Path
payload = official_payloads(Path(sys.argv[1]))[0]
started = time.perf_counter()
from broker_filter.streams.codec import AlertDecoder
AlertDecoder().decode(payload)
print(time.perf_counter() - started)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row, over all rounds (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median counts (default 5)")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="an Avro file of ZTF 4.x alerts")
    parser.add_argument("--no-first-call", action="store_true",
                        help="skip timing the first decode in fresh processes (numba JIT warm-up)")


def official_payloads(sample: Path) -> list[bytes]:
    """Re-frame each record in the official ZTF 4.02 schema, one container per alert."""
    import fastavro

    from broker_filter.streams.schema import ztf_schema

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
    """Alerts per CPU-second of this process (what "per core" means; on a shared machine
    wall time would also count the other jobs' time slices)."""
    count = 0
    started = time.process_time()
    deadline = started + seconds
    while time.process_time() < deadline:
        for payload in payloads:
            decode(payload)
        count += len(payloads)
    return count / (time.process_time() - started)


def _rates(decoders: list[Callable[[bytes], object]], payloads: list[bytes], seconds: float,
           rounds: int) -> list[float]:
    """Median alerts/s of each decoder over ``rounds`` interleaved rounds."""
    for decode in decoders:  # warm caches (parsed schemas, the numba kernel) outside the timing
        for payload in payloads:
            decode(payload)
    samples: list[list[float]] = [[] for _ in decoders]
    for _ in range(rounds):
        for index, decode in enumerate(decoders):
            samples[index].append(_rate(decode, payloads, seconds / rounds))
    return [statistics.median(s) for s in samples]


def first_decode_seconds(sample: Path, cache_dir: str | None) -> float:
    """Seconds from importing the decoder to the first alert, in a fresh interpreter;
    ``cache_dir`` set: numba's cache lives there (an empty folder = a cold JIT)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    done = subprocess.run([sys.executable, "-c", _FIRST_DECODE, str(sample)], env=env, check=True,
                          capture_output=True, text=True, timeout=600)
    return float(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> BenchResult:
    import fastavro

    from broker_filter.streams.codec import AlertDecoder

    payloads = official_payloads(args.sample)
    labels_and_decoders = [
        ("fastavro.reader per message, all fields (no Alert)", lambda p: list(fastavro.reader(io.BytesIO(p)))),
        ("AlertDecoder(keep_cutouts=True, compiled=False): fastavro, full", AlertDecoder(True, compiled=False).decode),
        ("AlertDecoder(keep_cutouts=False, compiled=False): fastavro, projected",
         AlertDecoder(False, compiled=False).decode),
        ("AlertDecoder(keep_cutouts=True): compiled, cutouts as bytes", AlertDecoder(True).decode),
        ("AlertDecoder(keep_cutouts=False): compiled, skipping (default)", AlertDecoder(False).decode),
    ]
    rates = _rates([d for _, d in labels_and_decoders], payloads, args.seconds, args.rounds)
    naive, full = rates[0], rates[1]
    rows = [[label, rate, rate / naive, rate / full] for (label, _), rate in zip(labels_and_decoders, rates)]
    mean_size = sum(map(len, payloads)) / len(payloads)
    notes = [f"{len(payloads)} real ZTF 4.02 alerts, mean {mean_size / 1024:.0f} KiB with cutouts; "
             f"{args.seconds:g} s per row in {args.rounds} interleaved rounds (median round)",
             "speedup = compiled skipping decoder / fastavro full decode (last row / second row); "
             f"compiled skip / compiled keep = {rates[4] / rates[3]:.2f}x; "
             f"fastavro skip / fastavro full = {rates[2] / rates[1]:.2f}x"]
    extra = {"alerts": len(payloads), "mean_payload_bytes": mean_size}
    if not args.no_first_call:
        with tempfile.TemporaryDirectory() as empty:
            cold = first_decode_seconds(args.sample, empty)
            warm = first_decode_seconds(args.sample, empty)
        notes.append(f"first decode in a fresh process (imports included): {cold:.2f} s with numba's cache "
                     f"empty (JIT compile), {warm:.2f} s with it filled")
        extra.update(first_decode_cold_s=cold, first_decode_warm_s=warm)
    return BenchResult(
        name="decode",
        columns=["decoder", "alerts per CPU-s", "vs fastavro.reader", "vs fastavro full"],
        rows=rows,
        speedup=rates[4] / full,
        notes=notes,
        extra=extra,
    )
