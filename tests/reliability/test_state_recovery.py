"""Re-processing after a crash must change nothing: the state and the records of an uninterrupted run.

After a kill -9 the daemon re-reads every alert whose Kafka transaction did not commit,
while its SQLite state may already hold what those alerts (and later ones) merged. These
tests replay that situation directly on the store and the pipeline, without Kafka.
"""

from __future__ import annotations

import numpy as np

from broker_filter.state import LightCurveStore
from broker_filter.streams.alert import Alert, Detection


def _alert(object_id: str, alert_id: int, times: list[float], first_id: int) -> Alert:
    detections = tuple(Detection(first_id + k, t, "g", 15.0 + 0.01 * k, 0.05) for k, t in enumerate(times))
    return Alert(object_id, alert_id, "ztf", "4.02", detections[-1].detection_id, detections)


def _content(store: LightCurveStore, object_id: str) -> dict[str, bytes]:
    state = store.get(object_id)
    return {band: s.ids.tobytes() + s.time.tobytes() for band, s in state.bands.items()}


def test_merging_an_alert_again_at_the_point_bound_changes_nothing(tmp_path):
    """An object at ``max_points_per_object``: the second merge of the same alert is a no-op.

    The store trims the oldest points after each merge, so re-merging re-adds the alert's
    trimmed points: the trim must then cut them again and nothing else.
    """
    store = LightCurveStore(None, max_points_per_object=10)
    store.merge(_alert("star", 1, list(np.arange(8.0)), first_id=1))  # 8 points held, t = 0..7
    late = _alert("star", 2, list(np.arange(8.0, 14.0)) + [100.0], first_id=100)  # 7 more: the bound cuts 5
    history = _alert("star", 3, [-3.0, -2.0, -1.0, 100.0], first_id=200)  # old history + one new point
    store.merge(late)
    store.merge(history)
    once = _content(store, "star")
    store.merge(history)  # the crash replay of alert 3
    assert _content(store, "star") == once
