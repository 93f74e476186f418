"""Light-curve state: idempotent, time-ordered, as-of views, bounded, durable across restarts."""

from __future__ import annotations

import math

import numpy as np

from broker_filter.state import LightCurveStore
from streams.alert import Alert, Detection


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
