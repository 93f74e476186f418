"""The e2e benchmark's pieces, and the state fix it measures, give the same answers as before.

Speed is measured by ``broker-filter bench e2e``, never asserted here; these tests pin what
must not change: ``_absent`` is ``~np.isin``, the fixed merge leaves the same light curves
as the merge it replaced, and each section's rows come out well-formed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from broker_filter_proving.bench import e2e
from broker_filter.periods import PeriodMemo
from broker_filter.state import LightCurveStore, _absent
from broker_filter.streams.archive import iter_archive

ZTF_SAMPLES = Path(__file__).resolve().parents[2] / "data" / "alerts" / "ztf"
ids = arrays(np.int64, st.integers(0, 40), elements=st.integers(-(2**62), 2**62))


@settings(max_examples=200, deadline=None)
@given(wanted=ids, held=ids)
def test_absent_is_not_in(wanted: np.ndarray, held: np.ndarray) -> None:
    np.testing.assert_array_equal(_absent(wanted, held), ~np.isin(wanted, held))


@settings(max_examples=50, deadline=None)
@given(wanted=ids, held=ids)
def test_absent_finds_every_held_id(wanted: np.ndarray, held: np.ndarray) -> None:
    assert not _absent(np.concatenate([held, wanted]), np.concatenate([wanted, held])).any()


def test_fixed_merge_equals_previous_merge_on_real_alerts() -> None:
    alerts = [item.alert for item in iter_archive([ZTF_SAMPLES], order="time") if item.alert is not None]
    assert len(alerts) > 20
    current, previous = LightCurveStore(None), LightCurveStore(None)
    for alert in alerts + alerts[::3]:  # the repeats merge nothing new, in both
        new, old = current.merge(alert), e2e._merge_before(previous, alert)
        assert new.new_points == old.new_points
    assert current.points_held == previous.points_held > 0
    for state in current:
        other = previous.get(state.object_id)
        assert sorted(state.bands) == sorted(other.bands)
        for band, series in state.bands.items():
            for column in ("ids", "time", "mag", "mag_err"):
                np.testing.assert_array_equal(getattr(series, column), getattr(other.bands[band], column))


def test_state_section_rows() -> None:
    rows = e2e._state_section([30], points=20)
    assert [row[1] for row in rows] == [
        "30 objects held, previous merge", "30 objects held, current merge", "30 objects held, period memo (2 bands each)"]
    assert rows[0][3] == 1.0 and all(row[2] > 0 and row[6] > 0 for row in rows[:2])
    assert isinstance(rows[2][6], float)  # an RSS delta: at 30 objects it may be 0 (pages already held)


def test_replay_section_on_real_alerts() -> None:
    args = argparse.Namespace(replay_alerts=15, model=None, device="cpu", max_batch=16, batch_sizes=None, profile=None,
                              variants="current,baseline")
    rows, extra = e2e._replay_section(ZTF_SAMPLES, args)
    assert len(rows) == 5 and rows[0][3] == 1.0 and all(row[2] > 0 for row in rows)
    assert [row[1].rsplit(", ", 1)[-1] for row in rows[3:]] == ["period memo", "period searched at every scoring (before)"]
    assert extra["alerts"] == 15 and set(extra["ms_per_alert"]) == {
        "decode", "merge + decision", "inference + records, max_batch 16, current", "inference + records, max_batch 16, baseline"}
    assert extra["current_over_baseline"] > 0


def test_an_unknown_variant_stops_the_run() -> None:
    with pytest.raises(SystemExit, match="unknown variant"):
        e2e._variants(argparse.Namespace(variants="current,fast"))


def test_baseline_variant_searches_whole_curves_on_every_scoring() -> None:
    """The baseline gives the scorer no period (it searches the whole curve); the current
    pipeline's periods are the rule's, which differ from the whole curve's on a grown curve."""
    pipeline = e2e._pipeline(argparse.Namespace(model=None, device="cpu", max_batch=16))
    assert isinstance(pipeline.periods, PeriodMemo)
    baseline = e2e.with_variant(pipeline, "baseline")
    assert np.isnan(baseline.periods.periods([None, None], baseline.inferencer.estimate_periods)).all()
    pipeline.inferencer.close()

