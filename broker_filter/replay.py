"""The archive driver: the daemon's pipeline on archived alerts, writing files instead of topics.

It reads archives with :func:`broker_filter.streams.archive.iter_archive` (observation-time order; the
archive decodes each record once and keeps its bytes for dead-lettering), feeds the same
:class:`~broker_filter.pipeline.Pipeline` as the Kafka daemon, batch by batch, and writes
``classifications.jsonl``, ``novelty.jsonl`` and ``dead_letter.jsonl`` into the output
folder, then ``summary.json``. Inference runs in line: there is no consumer to keep alive.
When ``labels.csv`` files lie in or beside the sources (archives made by ``simulate``),
the records are joined with them (:mod:`broker_filter.truth`): ``truth.json``,
``truth.png`` and a short ``labelled`` block in the summary.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker_filter.batching import MicroBatcher
from broker_filter.logging_setup import progress_bar
from broker_filter.outputs import DeadLetter, Output
from broker_filter.pipeline import Pipeline
from broker_filter.streams.archive import iter_archive
from broker_filter.streams.sinks import JsonlSink

OUTPUT_FILES = {"classification": "classifications.jsonl", "novelty": "novelty.jsonl", "dead_letter": "dead_letter.jsonl"}


@dataclass
class ReplaySummary:
    """What ``summary.json`` holds: alert counts by outcome (``alerts_in`` = ``alerts_decoded`` +
    ``dead_lettered``; ``alerts_decoded`` = ``scorings`` + ``below_minimum`` + ``throttled``),
    ``objects_scored`` (distinct objects scored at least once), ``novel_flagged`` (novelty
    records written), wall ``seconds``, and how many objects have each class as their latest
    top class."""

    alerts_in: int = 0
    alerts_decoded: int = 0
    dead_lettered: int = 0
    below_minimum: int = 0
    throttled: int = 0
    scorings: int = 0
    objects_scored: int = 0
    novel_flagged: int = 0
    seconds: float = 0.0
    bundle_id: str = ""
    top_classes: dict[str, int] = field(default_factory=dict)
    labelled: dict | None = None


def replay(
    sources: Sequence[str | Path], out_dir: str | Path, pipeline: Pipeline, *, max_batch: int, progress: bool = True
) -> ReplaySummary:
    """Run ``pipeline`` over ``sources`` and write the output files; returns the summary written."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    # the pipeline's decoder: the config's [decode] and [limits] hold for archives as for Kafka
    items = iter_archive(list(sources), order="time", decoder=pipeline.decoder)  # raises FileNotFoundError before any output
    out_dir.mkdir(parents=True, exist_ok=True)
    batcher: MicroBatcher = MicroBatcher(max_batch=max_batch, max_wait_ms=float("inf"), max_slots=max(16 * max_batch, 1024))
    tally = _Tally()
    with ExitStack() as stack:
        sinks = {kind: stack.enter_context(JsonlSink(out_dir / name)) for kind, name in OUTPUT_FILES.items()}
        for item in progress_bar(items, desc="replay", unit=" alerts") if progress else items:
            pipeline.metrics.alerts_consumed.inc()
            if item.error is not None:
                slot = pipeline.dead_letter(
                    DeadLetter(f"{item.origin}#{item.position}", item.error.reason, item.error.detail, item.payload)
                )
            else:
                slot = pipeline.accept_alert(
                    item.alert, origin=f"{item.origin}#{item.position}", payload=lambda i=item: i.payload
                )
            batch = batcher.add(slot, slot.needs_scoring)
            if batch is not None:
                _write(pipeline.complete(batch, pipeline.score(batch)), sinks, tally)
        batch = batcher.take()
        if batch is not None:
            _write(pipeline.complete(batch, pipeline.score(batch)), sinks, tally)
    pipeline.store.flush()
    summary = tally.summary(time.perf_counter() - started, pipeline.model.bundle_id)
    summary.labelled = _judge(sources, out_dir, pipeline.inferencer.bundle.class_mapping)
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def _judge(sources: Sequence[str | Path], out_dir: Path, mapping) -> dict | None:
    """Join the records with the labels beside the sources, if any: truth.json, truth.png, the summary's block."""
    from broker_filter.truth import find_labels, plot_truth, stream_truth

    labels = find_labels(sources)
    if not labels:
        return None
    with (out_dir / OUTPUT_FILES["classification"]).open() as handle:
        records = [record for record in map(json.loads, handle) if record["object_id"] in labels]
    result = stream_truth(records, labels, mapping)
    (out_dir / "truth.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_truth(records, labels, mapping, out_dir / "truth.png")
    keys = ("known_objects", "final_accuracy", "known_scorings", "false_alarm_rate", "novel_objects", "novel_detected")
    return {key: result[key] for key in keys if key in result}


def _write(outputs: list[Output], sinks: dict, tally: _Tally) -> None:
    for output in outputs:
        value = output.value.to_json() if isinstance(output.value, DeadLetter) else output.value
        sinks[output.kind].write(value)
        tally.count(output)


class _Tally:
    """Counts the summary's figures from the outputs themselves (what was written is what is counted)."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.dead = 0
        self.novel = 0
        self.latest_class: dict[str, str] = {}

    def count(self, output: Output) -> None:
        if output.kind == "dead_letter":
            self.dead += 1
        elif output.kind == "novelty":
            self.novel += 1
        else:
            record = output.value
            self.status[record["status"]] += 1
            if record["status"] == "scored":
                self.latest_class[record["object_id"]] = record["top_class"]

    def summary(self, seconds: float, bundle_id: str) -> ReplaySummary:
        decoded = sum(self.status.values())
        return ReplaySummary(
            alerts_in=decoded + self.dead,
            alerts_decoded=decoded,
            dead_lettered=self.dead,
            below_minimum=self.status["below_minimum"],
            throttled=self.status["throttled"],
            scorings=self.status["scored"],
            objects_scored=len(self.latest_class),
            novel_flagged=self.novel,
            seconds=round(seconds, 3),
            bundle_id=bundle_id,
            top_classes=dict(sorted(Counter(self.latest_class.values()).items())),
        )
