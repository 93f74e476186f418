"""The pipeline core, shared by the Kafka daemon and the archive replay: alert -> state -> score -> records.

Drivers (:mod:`broker_filter.daemon`, :mod:`broker_filter.replay`) only move bytes: they
hand each input to :meth:`Pipeline.accept`, group the returned slots with a
:class:`~broker_filter.batching.MicroBatcher`, call :meth:`Pipeline.score` on each closed
batch (the daemon from its inference thread) and :meth:`Pipeline.complete` to get the
batch's :class:`~broker_filter.outputs.Output` records in input order. Because both drivers
go through these three calls, the same alerts give the same records (``processed_at_ms``
and ``alert_timestamp_ms`` aside) whichever driver reads them.

Per input, :meth:`Pipeline.accept`:

1. decodes it (or takes the archive's decoding); a :class:`~broker_filter.streams.alert.DecodeError`
   makes a dead-letter output and the stream goes on;
2. merges the alert into its object's light curve (idempotent, see :mod:`broker_filter.state`);
3. asks the :class:`~broker_filter.scoring.ScoringPolicy`: score, below the minimum, or
   throttled; the last two make their classification record at once.

Per batch, :meth:`Pipeline.score` takes each light curve's period from the
:class:`~broker_filter.periods.PeriodMemo` (the rule of :mod:`broker_filter.model.period_schedule`: a
search only when the curve has grown by 25% since the last one) and runs the model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker_filter.batching import MicroBatch
from broker_filter.config import Config, ConfigError
from broker_filter.inference import Inferencer, InferenceResult
from broker_filter.metrics import Metrics
from broker_filter import __version__
from broker_filter.outputs import CLASSIFIER, DeadLetter, ModelIdentity, Output, classification_record, novelty_record, record_id
from broker_filter.periods import PeriodMemo, PeriodSource
from broker_filter.scoring import Decision, ScoringPolicy, policy_bands
from broker_filter.state import LightCurveStore
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.codec import AlertDecoder

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One input's place in a batch: its ready outputs, or the decision awaiting the model."""

    outputs: list[Output] = field(default_factory=list)
    alert: Alert | None = None
    decision: Decision | None = None
    timestamp_ms: int | None = None
    origin: str = ""

    @property
    def needs_scoring(self) -> bool:
        return self.decision is not None and self.decision.verdict == "score"


class Pipeline:
    """Decode, merge, decide, and turn model scores into records; see the module docstring."""

    def __init__(
        self,
        *,
        decoder: AlertDecoder,
        store: LightCurveStore,
        inferencer: Inferencer,
        min_points: int,
        min_interval_s: float,
        bands: tuple[str, ...],
        novelty_threshold: str,
        metrics: Metrics,
        periods: PeriodSource | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.decoder = decoder
        self.store = store
        self.inferencer = inferencer
        self.metrics = metrics
        self.periods = periods or PeriodMemo(inferencer.bundle.preprocess, store.max_objects)
        self.policy = ScoringPolicy(min_points, min_interval_s, policy_bands(bands, inferencer.model_bands), inferencer.n_min)
        bundle = inferencer.bundle
        self.model = ModelIdentity(
            bundle.bundle_id, bundle.version, novelty_threshold, float(bundle.thresholds[novelty_threshold])
        )
        metrics.build_info.labels(__version__, bundle.bundle_id, CLASSIFIER).set(1)
        self._clock_ms = clock_ms

    # -- per input -------------------------------------------------------------------

    def accept(self, payload: bytes, origin: str, timestamp_ms: int | None = None) -> Slot:
        """One raw message (Kafka value bytes)."""
        try:
            alert = self.decoder.decode(payload)
        except DecodeError as error:
            return self.dead_letter(DeadLetter.of(origin, error, payload))
        return self.accept_alert(alert, timestamp_ms, origin=origin, payload=lambda: payload)

    def accept_alert(
        self,
        alert: Alert,
        timestamp_ms: int | None = None,
        *,
        origin: str = "",
        payload: Callable[[], bytes] = bytes,
    ) -> Slot:
        """One decoded alert: merge, then decide. ``payload`` gives the original bytes, should
        the alert have to be dead-lettered after all (a value the decoder let through that the
        state cannot hold): bad input never stops the stream."""
        self.metrics.alerts_decoded.labels(alert.survey).inc()
        try:
            return self._merge_and_decide(alert, timestamp_ms, origin)
        except Exception as error:  # noqa: BLE001 - the per-message boundary: one input, one dead letter
            log.exception("alert %s of %s could not be processed; dead-lettered", alert.alert_id, alert.object_id[:100])
            detail = f"processing failed: {type(error).__name__}: {error}"
            return self.dead_letter(DeadLetter(origin, "invalid_value", detail, payload()))

    def _merge_and_decide(self, alert: Alert, timestamp_ms: int | None, origin: str) -> Slot:
        merged = self.store.merge(alert)
        if merged.trimmed:
            self.metrics.points_trimmed.labels("too_many_points").inc(merged.trimmed)
        decision = self.policy.decide(merged.state, alert.time)
        slot = Slot(alert=alert, decision=decision, timestamp_ms=timestamp_ms, origin=origin)
        if decision.verdict == "score":
            if self.policy.min_interval_s > 0:  # only throttling needs to remember scorings
                self.store.mark_scored(merged.state, alert.time, self.policy.forget_before(alert.time))
        else:
            if decision.verdict == "below_minimum":
                self.metrics.below_minimum.inc()
            slot.outputs.append(self._unscored(alert, decision, timestamp_ms, origin))
        return slot

    def dead_letter(self, letter: DeadLetter) -> Slot:
        self.metrics.alerts_dead_lettered.labels(letter.reason).inc()
        return Slot(outputs=[Output("dead_letter", letter.origin, letter)])

    # -- per batch -------------------------------------------------------------------

    def score(self, batch: MicroBatch[Slot]) -> InferenceResult:
        """Run the model on the batch's slots that need it, periods from :attr:`periods`.

        Reads only the slots, so it may run in another thread than :meth:`accept`; but only
        one thread at a time (the period memo is not locked): the daemon has one inference
        thread. ``seconds`` and the latency metric include the period search.
        """
        started = time.perf_counter()
        requests = [slot.decision.lightcurves for slot in batch.slots if slot.needs_scoring]
        if not requests:
            return InferenceResult([], 0.0)
        curves = [lc for request in requests for lc in request]
        periods = self.periods.periods(curves, self.inferencer.estimate_periods)
        result = InferenceResult(self.inferencer.score(requests, periods).scores, time.perf_counter() - started)
        self.metrics.batch_size.observe(len(requests))
        self.metrics.inference_latency.observe(result.seconds)
        return result

    def complete(self, batch: MicroBatch[Slot], result: InferenceResult) -> list[Output]:
        """The batch's outputs in input order, scored slots filled from ``result``."""
        scores = iter(result.scores)
        outputs: list[Output] = []
        for slot in batch.slots:
            if slot.needs_scoring:
                outputs.extend(self._scored(slot, next(scores)))
            else:
                outputs.extend(slot.outputs)
        self.metrics.objects_held.set(self.store.objects_held)
        self.metrics.points_held.set(self.store.points_held)
        return outputs

    # -- records ---------------------------------------------------------------------

    def _scored(self, slot: Slot, score) -> list[Output]:
        alert, decision = slot.alert, slot.decision
        if score is None:  # no chunk came out of preprocessing: as good as below the minimum
            self.metrics.below_minimum.inc()
            return [self._unscored(alert, Decision("below_minimum", (), decision.n_points, ()), slot.timestamp_ms, slot.origin)]
        record = classification_record(
            alert,
            status="scored",
            model=self.model,
            min_points=self.policy.points_needed,
            n_points=score.n_points,
            bands_used=decision.bands,
            probabilities=dict(score.probs),
            top_class=score.top_class,
            energy=float(score.energy),
            novel=score.novel[self.model.novelty_threshold],
            p_value=score.p_value,
            threshold_energy=self.inferencer.bundle.novelty_cut(score.n_points, self.model.novelty_threshold),
            timestamp_ms=slot.timestamp_ms,
            now_ms=self._clock_ms(),
        )
        self.metrics.scorings.labels(score.top_class).inc()
        self.metrics.served_energy.observe(record["energy"])
        self.metrics.top_class_probability.observe(record["probabilities"][score.top_class])
        if score.p_value is not None:
            self.metrics.novelty_p_value.observe(score.p_value)
        outputs = [Output("classification", record["record_id"], record, slot.origin)]
        if record["novel"]:
            self.metrics.novelty_flags.labels(score.top_class).inc()
            outputs.append(Output("novelty", record["record_id"], novelty_record(record), slot.origin))
        return outputs


    def _unscored(self, alert: Alert, decision: Decision, timestamp_ms: int | None, origin: str) -> Output:
        record = classification_record(
            alert,
            status=decision.verdict,
            model=self.model,
            min_points=self.policy.points_needed,
            n_points=decision.n_points,
            bands_used=decision.bands,
            timestamp_ms=timestamp_ms,
            now_ms=self._clock_ms(),
        )
        return Output("classification", record_id(alert), record, origin)


def decoder_from_config(config: Config) -> AlertDecoder:
    """The decoder the ``[decode]`` section describes (a missing schema file stops start-up)."""
    decode = config.decode
    schema = None
    if decode.schema_file:
        path = Path(decode.schema_file)
        try:
            schema = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"[decode] schema_file: cannot read {path} as a JSON Avro schema ({error})") from error
    if decode.schema_dir and not Path(decode.schema_dir).is_dir():
        raise ConfigError(f"[decode] schema_dir: {decode.schema_dir} is not a directory")
    return AlertDecoder(
        keep_cutouts=decode.keep_cutouts,
        schema=schema,
        schema_dir=Path(decode.schema_dir) if decode.schema_dir else None,
        registry_url=decode.schema_registry_url or None,
        limits=config.limits,
    )


def pipeline_from_config(config: Config, metrics: Metrics, inferencer: Inferencer | None = None) -> Pipeline:
    """Every component from one :class:`~broker_filter.config.Config` (the inferencer may be shared)."""
    inferencer = inferencer or Inferencer(
        config.inference.bundle or None, config.inference.device, config.inference.mixed_precision
    )
    store = LightCurveStore(
        config.state.path or None,
        max_points_per_object=config.state.max_points_per_object,
        max_objects=config.state.max_objects,
    )
    return Pipeline(
        decoder=decoder_from_config(config),
        store=store,
        inferencer=inferencer,
        min_points=config.scoring.min_points,
        min_interval_s=config.scoring.min_interval_s,
        bands=config.scoring.bands,
        novelty_threshold=config.scoring.novelty_threshold,
        metrics=metrics,
    )
