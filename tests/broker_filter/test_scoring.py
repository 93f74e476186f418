"""Scoring policy: minimum points per band, event-time throttling, deterministic on re-processing."""

from __future__ import annotations

from broker_filter.scoring import ScoringPolicy, policy_bands
from broker_filter.state import LightCurveStore
from broker_filter.streams.alert import Alert, Detection


def _state(points_g: int, points_r: int = 0):
    dets = [Detection(i, 100.0 + i, "g", 15.0, 0.05) for i in range(points_g)]
    dets += [Detection(1000 + i, 100.5 + i, "r", 15.0, 0.05) for i in range(points_r)]
    dets.sort(key=lambda d: d.time)
    store = LightCurveStore(None)
    alert = Alert("A", 1, "ztf", "t", dets[-1].detection_id, tuple(dets))
    return store, store.merge(alert).state, alert.time


def test_below_minimum_counts_the_best_band():
    _, state, t = _state(5, 3)
    decision = ScoringPolicy(10, 0.0, ("g", "r"), n_min=5).decide(state, t)
    assert decision.verdict == "below_minimum" and decision.n_points == 5


def test_only_qualifying_bands_are_scored_and_n_min_is_a_floor():
    _, state, t = _state(12, 6)
    decision = ScoringPolicy(3, 0.0, ("g", "r"), n_min=8).decide(state, t)
    assert decision.verdict == "score" and decision.bands == ("g",) and decision.n_points == 12


def test_throttling_by_observation_time_allows_rescoring_the_same_alert():
    store, state, t = _state(20)
    policy = ScoringPolicy(5, 3600.0, ("g",), n_min=5)
    assert policy.decide(state, t).verdict == "score"
    store.mark_scored(state, t, policy.forget_before(t))
    assert policy.decide(state, t).verdict == "score"  # the same alert again (crash recovery)
    assert policy.decide(state, t + 0.01).verdict == "throttled"  # 14 minutes later
    assert policy.decide(state, t + 0.05).verdict == "score"  # 72 minutes later


def test_policy_bands():
    assert policy_bands((), ("g", "r")) == ("g", "r")
    assert policy_bands(("r", "z"), ("g", "r")) == ("r",)
