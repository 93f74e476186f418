"""The scoring policy: which alert makes its object be (re)scored, and on which light curves.

Every alert is accounted for by exactly one verdict:

* ``score``: the object has, in at least one band the model reads, ``min_points`` usable
  detections observed at or before the alert (and never fewer than the bundle's ``n_min``,
  below which preprocessing cuts no chunk), and it was not scored for an earlier alert
  less than ``min_interval_s`` of *observation* time before this one;
* ``below_minimum``: not enough points yet (counted and reported, never dropped silently);
* ``throttled``: enough points, but scored recently (``min_interval_s``).

Decisions use the alert's observation time, not the wall clock, so that replaying an
archive, consuming the same alerts from Kafka, and re-processing after a crash all take the
same decisions. The arrival of the alert is itself the "something new": each alert carries
a new triggering detection.

The light curves handed to the model are the object's bands that qualify, as of the alert's
time; each is folded with the period of :mod:`broker_filter.model.period_schedule` (the training
estimator on a prefix refreshed at every 25% growth, remembered by
:mod:`broker_filter.periods`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from broker_filter.state import ObjectState
from broker_filter.model.lightcurve import LightCurve

SECONDS_PER_DAY = 86400.0

Verdict = Literal["score", "below_minimum", "throttled"]


@dataclass(frozen=True)
class Decision:
    """``lightcurves``: what to score (empty unless ``verdict == "score"``); ``n_points``: points
    in the qualifying bands (or, below the minimum, in the best band the model reads)."""

    verdict: Verdict
    lightcurves: tuple[LightCurve, ...]
    n_points: int
    bands: tuple[str, ...]


@dataclass(frozen=True)
class ScoringPolicy:
    """``bands``: the bands scored (the model's bands when empty); ``n_min``: the bundle's chunk minimum."""

    min_points: int
    min_interval_s: float
    bands: tuple[str, ...]
    n_min: int

    @property
    def points_needed(self) -> int:
        return max(self.min_points, self.n_min)

    def decide(self, state: ObjectState, alert_time: float) -> Decision:
        curves = state.view(alert_time, self.bands or None)
        qualifying = tuple(lc for lc in curves if len(lc) >= self.points_needed)
        if not qualifying:
            best = max((len(lc) for lc in curves), default=0)
            return Decision("below_minimum", (), best, ())
        n_points = sum(len(lc) for lc in qualifying)
        bands = tuple(lc.band for lc in qualifying)
        interval_days = self.min_interval_s / SECONDS_PER_DAY
        if interval_days > 0 and state.scored_within(alert_time - interval_days, alert_time):
            return Decision("throttled", (), n_points, bands)
        return Decision("score", qualifying, n_points, bands)

    def forget_before(self, alert_time: float) -> float:
        """Scorings older than this no longer matter to the interval check (bounds what is stored)."""
        return alert_time - self.min_interval_s / SECONDS_PER_DAY


def policy_bands(configured: Sequence[str], model_bands: Sequence[str] | None) -> tuple[str, ...]:
    """The configured bands, restricted to those the model reads; the model's when none configured."""
    if not configured:
        return tuple(model_bands or ())
    if model_bands is None:
        return tuple(configured)
    return tuple(band for band in configured if band in set(model_bands))
