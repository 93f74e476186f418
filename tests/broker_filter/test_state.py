"""Light-curve state: idempotent, time-ordered, as-of views, bounded, durable across restarts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from broker_filter.state import LightCurveStore
from broker_filter.streams.alert import Alert, Detection


def _alert(object_id: str, alert_id: int, points: list[tuple[int, float, str]], survey: str = "ztf") -> Alert:
    detections = tuple(Detection(i, t, band, 15.0 + 0.01 * i, 0.05) for i, t, band in sorted(points, key=lambda p: p[1]))
    return Alert(object_id, alert_id, survey, "test", detections[-1].detection_id, detections)


def test_merge_is_idempotent_and_keeps_history_sorted():
    store = LightCurveStore(None)
    first = store.merge(_alert("A", 1, [(1, 100.0, "g"), (2, 101.0, "r")]))
    assert first.new_points == 2
    again = store.merge(_alert("A", 2, [(1, 100.0, "g"), (2, 101.0, "r"), (3, 99.5, "g")]))
    assert again.new_points == 1
    assert store.merge(_alert("A", 2, [(1, 100.0, "g"), (3, 99.5, "g")])).new_points == 0
    g = again.state.bands["g"]
    assert list(g.ids) == [3, 1] and np.all(np.diff(g.time) >= 0)
    assert store.points_held == 3 and store.objects_held == 1


def test_upper_limits_forced_and_nan_points_are_not_held():
    dets = (
        Detection(1, 1.0, "g", 15.0, 0.05),
        Detection(2, 2.0, "g", math.nan, math.nan, upper_limit=True),
        Detection(3, 3.0, "g", 15.1, 0.05, forced=True),
        Detection(4, 4.0, "g", math.nan, 0.05),
        Detection(5, math.nan, "g", 15.2, 0.05),
    )
    store = LightCurveStore(None)
    assert store.merge(Alert("B", 9, "ztf", "t", 1, dets)).new_points == 1


def test_view_is_as_of_the_alert_time():
    store = LightCurveStore(None)
    state = store.merge(_alert("A", 1, [(i, 100.0 + i, "g") for i in range(10)])).state
    curves = state.view(104.0)
    assert len(curves) == 1 and len(curves[0]) == 5 and curves[0].time[-1] == 104.0
    assert state.view(104.0, bands=["r"]) == []


def test_bounds_per_object_and_in_total():
    store = LightCurveStore(None, max_points_per_object=5, max_objects=2)
    state = store.merge(_alert("A", 1, [(i, 100.0 + i, "g" if i % 2 else "r") for i in range(8)])).state
    assert state.n_points == 5
    assert min(s.time.min() for s in state.bands.values()) == 103.0  # the oldest went first
    store.merge(_alert("B", 2, [(100, 200.0, "g")]))
    store.merge(_alert("C", 3, [(200, 300.0, "g")]))
    assert store.objects_held == 2 and store.get("A") is None  # least recently merged evicted
    assert store.points_held == 2


def test_durable_across_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    store = LightCurveStore(path)
    state = store.merge(_alert("A", 1, [(1, 100.0, "g"), (2, 101.0, "r")])).state
    store.mark_scored(state, 101.0, keep_after=0.0)
    store.close()
    reopened = LightCurveStore(path)
    loaded = reopened.get("A")
    assert loaded is not None and loaded.n_points == 2 and list(loaded.scored) == [101.0]
    assert reopened.merge(_alert("A", 1, [(1, 100.0, "g"), (2, 101.0, "r")])).new_points == 0
    reopened.close()


def test_unflushed_changes_are_lost_and_flushed_ones_kept(tmp_path):
    path = tmp_path / "state.sqlite"
    store = LightCurveStore(path)
    store.merge(_alert("A", 1, [(1, 100.0, "g")]))
    store.flush()
    store.merge(_alert("A", 2, [(2, 101.0, "g")]))  # a crash before the next flush
    crashed_view = LightCurveStore(path).get("A")
    assert crashed_view.n_points == 1


def test_stored_objects_bounded_on_disk(tmp_path):
    path = tmp_path / "state.sqlite"
    store = LightCurveStore(path, max_objects=2)
    for k, name in enumerate("ABC"):
        store.merge(_alert(name, k, [(k, 100.0 + k, "g")]))
        store.flush()
    store.close()
    reopened = LightCurveStore(path, max_objects=2)
    assert reopened.get("A") is None and reopened.get("C") is not None


def test_new_points_counts_only_points_still_held_after_the_trim():
    """Points merged and cut by the bound in the same merge are not new: the state did not gain them."""
    store = LightCurveStore(None, max_points_per_object=5)
    store.merge(_alert("A", 1, [(i, 100.0 + i, "g") for i in range(5)]))  # t = 100..104, at the bound
    old_history = store.merge(_alert("A", 2, [(50, 90.0, "g"), (51, 91.0, "g"), (52, 105.0, "g")]))
    # 90 and 91 are older than everything held: merged, then trimmed at once; only 105 stays
    assert old_history.new_points == 1
    assert sorted(old_history.state.bands["g"].time) == [101.0, 102.0, 103.0, 104.0, 105.0]


def _throttle_decisions(store: LightCurveStore, policy, alerts: list[Alert]) -> list[str]:
    """What the pipeline does per alert: merge, decide, and remember a scoring (``Pipeline.accept``)."""
    verdicts = []
    for alert in alerts:
        state = store.merge(alert).state
        decision = policy.decide(state, alert.time)
        if decision.verdict == "score":
            store.mark_scored(state, alert.time, policy.forget_before(alert.time))
        verdicts.append(decision.verdict)
    return verdicts


def test_throttling_after_a_crash_replay_decides_as_an_uninterrupted_run(tmp_path):
    """A crash after the state was saved re-processes alerts older than the newest scoring.

    With ``min_interval_s`` = 5 days and one alert a day, an object is scored every 5 days.
    The crashed run saved the state after day 20 but committed only up to day 11; the alerts
    of days 12..20 are read again and must get the uninterrupted run's verdicts, and leave
    the uninterrupted run's state.
    """
    from broker_filter.scoring import ScoringPolicy

    policy = ScoringPolicy(min_points=3, min_interval_s=5 * 86400.0, bands=("g",), n_min=3)
    alerts = [_alert("A", day, [(k, 100.0 + k, "g") for k in range(day + 1)]) for day in range(2, 21)]
    uninterrupted = LightCurveStore(tmp_path / "reference.sqlite")
    expected = _throttle_decisions(uninterrupted, policy, alerts)
    assert expected.count("score") >= 3 and "throttled" in expected
    uninterrupted.close()

    path = tmp_path / "crashed.sqlite"
    crashed = LightCurveStore(path)
    _throttle_decisions(crashed, policy, alerts)  # everything merged and saved ...
    crashed.close()  # ... but the Kafka transaction of days 12..20 never committed
    replayed = LightCurveStore(path)
    committed = next(i for i, a in enumerate(alerts) if a.alert_id == 12)
    assert _throttle_decisions(replayed, policy, alerts[committed:]) == expected[committed:]
    replayed.close()
    assert list(LightCurveStore(path).get("A").scored) == list(LightCurveStore(tmp_path / "reference.sqlite").get("A").scored)


def test_a_full_disk_is_one_clear_state_error_and_the_changes_are_kept(tmp_path, monkeypatch):
    """SQLite's "database or disk is full" must stop with one line naming the file, not a traceback."""
    import sqlite3

    from broker_filter.state import LightCurveStore, StateError
    from broker_filter.streams.alert import Alert, Detection

    store = LightCurveStore(tmp_path / "state.sqlite")
    store.merge(Alert("ZTF1", 1, "ztf", "4.02", 1, (Detection(1, 60000.5, "g", 15.0, 0.05),)))

    def full(changed):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_write", full)
    with pytest.raises(StateError, match=r"state.sqlite: cannot write the state \(database or disk is full\)"):
        store.flush()
    monkeypatch.undo()
    assert store.flush() == 1  # once space is back, the same changes are written
    store.close()
