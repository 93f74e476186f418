"""The period rule and its memo: a pure function of the as-of light curve, remembered without changing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bf_support import make_config, read_jsonl
from hypothesis import given
from hypothesis import strategies as st

from broker_filter.metrics import Metrics
from broker_filter.periods import PeriodMemo
from broker_filter.pipeline import pipeline_from_config
from broker_filter.replay import replay
from broker_filter.model.data import load_lightcurve_table
from broker_filter.model.features import PreprocessConfig, resolve_periods
from broker_filter.model.lightcurve import LightCurve
from broker_filter.model.period_schedule import next_step, period_points, period_prefix, scheduled_periods

LIGHTCURVES = Path(__file__).resolve().parents[2] / "data" / "lightcurves"
CFG = PreprocessConfig()  # n_min 20


def search(prefixes: list[LightCurve]) -> np.ndarray:
    return resolve_periods(prefixes, CFG)


@pytest.fixture(scope="module")
def curves() -> list[LightCurve]:
    """Two real ASAS-3 V-band curves, their first 120 points (a live object's first months)."""
    lcs = [lc for lc in load_lightcurve_table(LIGHTCURVES, bands=["V"]) if len(lc) >= 120][:2]
    return [LightCurve(lc.object_id, lc.band, lc.time[:120], lc.mag[:120], lc.mag_err[:120]) for lc in lcs]


def as_of(lc: LightCurve, n: int) -> LightCurve:
    return LightCurve(lc.object_id, lc.band, lc.time[:n], lc.mag[:n], lc.mag_err[:n])


def test_schedule_grows_by_a_quarter():
    steps = [20]
    while steps[-1] < 2000:
        steps.append(next_step(steps[-1]))
    assert steps[:8] == [20, 25, 31, 38, 47, 58, 72, 90] and len(steps) == 22
    assert [period_points(n, 20) for n in (0, 19, 20, 24, 25, 30, 31, 2000)] == [0, 0, 20, 20, 25, 25, 31, 1616]


@given(n=st.integers(0, 10**6), n_min=st.integers(1, 200))
def test_period_points_is_the_largest_step_not_above_n(n: int, n_min: int):
    k = period_points(n, n_min)
    if n < n_min:
        assert k == 0
        return
    assert k <= n < next_step(k) and k > 0.8 * n - 1
    step = n_min
    while step < k:
        step = next_step(step)
    assert step == k  # on the schedule


def test_memo_equals_the_rule_point_by_point_and_searches_once_per_step(curves):
    memo = PeriodMemo(CFG, max_objects=10)
    for n in range(1, 121):
        live = [as_of(lc, n) for lc in curves]
        got = memo.periods(live, search)
        if n % 9 == 0 or n in (20, 24, 25, 120):
            np.testing.assert_array_equal(got, scheduled_periods(live, CFG))
        assert np.isnan(got).all() == (n < CFG.n_min)
    steps = len({period_points(n, 20) for n in range(20, 121)})  # 20, 25, ..., 112: 9 steps
    assert memo.searches == 2 * steps and memo.hits == 2 * (121 - 20) - memo.searches


def test_a_lost_memo_gives_the_same_periods(curves):
    live = [as_of(lc, 100) for lc in curves]
    warm = PeriodMemo(CFG, max_objects=10)
    for n in (60, 80, 100):
        first = warm.periods([as_of(lc, n) for lc in curves], search)
    np.testing.assert_array_equal(first, PeriodMemo(CFG, max_objects=10).periods(live, search))


def test_a_late_point_inside_the_prefix_is_searched_again(curves):
    lc = as_of(curves[0], 60)
    memo = PeriodMemo(CFG, max_objects=10)
    memo.periods([lc], search)
    late = LightCurve(lc.object_id, lc.band, np.insert(lc.time, 3, lc.time[2] + 1e-3), np.insert(lc.mag, 3, lc.mag[2] + 0.3),
                      np.insert(lc.mag_err, 3, 0.02))
    (period,) = memo.periods([late], search)
    assert memo.searches == 2 and period == scheduled_periods([late], CFG)[0]
    assert period_prefix(late, 20).time[3] == lc.time[2] + 1e-3


def test_two_alerts_of_one_object_in_one_batch_share_a_search(curves):
    memo = PeriodMemo(CFG, max_objects=10)
    periods = memo.periods([as_of(curves[0], 50), as_of(curves[0], 52), as_of(curves[0], 58)], search)
    assert memo.searches == 2 and periods[0] == periods[1] != periods[2]


def test_memo_is_bounded_by_objects(curves):
    memo = PeriodMemo(CFG, max_objects=1)
    first, second = (as_of(lc, 40) for lc in curves)
    memo.periods([first], search)
    memo.periods([second], search)
    memo.periods([first], search)  # evicted by the second: searched again
    assert len(memo) == 1 and memo.searches == 3 and memo.hits == 0
    with pytest.raises(ValueError):
        PeriodMemo(CFG, max_objects=0)


def test_bands_the_model_does_not_read_get_no_period(curves):
    other = LightCurve("x", "u", curves[0].time[:40], curves[0].mag[:40], curves[0].mag_err[:40])
    assert np.isnan(PeriodMemo(CFG, max_objects=10).periods([other], search)).all()


def test_replay_searches_far_less_than_it_scores_and_matches_the_reference(tmp_path, labelled_stream, inferencer, replayed):
    pipeline = pipeline_from_config(make_config(), Metrics(), inferencer)
    summary = replay([labelled_stream.path], tmp_path, pipeline, max_batch=16, progress=False)
    memo = pipeline.periods
    assert summary.scorings > 0 and memo.hits > 3 * memo.searches
    ours = {r["record_id"]: (r["top_class"], r["energy"]) for r in read_jsonl(tmp_path / "classifications.jsonl")}
    theirs = {r["record_id"]: (r["top_class"], r["energy"]) for r in read_jsonl(replayed / "classifications.jsonl")}
    assert ours.keys() == theirs.keys()
    for record_id, (top, energy) in ours.items():
        assert top == theirs[record_id][0] and (energy is None) == (theirs[record_id][1] is None)
        if energy is not None:
            assert abs(energy - theirs[record_id][1]) <= 1e-5 * max(1.0, abs(energy))


@given(
    times=st.lists(st.sampled_from([1.0, 2.0, 2.5, 3.0, 3.0, np.nan]), min_size=0, max_size=40),
    errs=st.lists(st.sampled_from([0.02] * 8 + [0.0, -1.0, np.inf]), min_size=40, max_size=40),
    ordered=st.booleans(),
)
def test_prefix_is_the_cleaned_curves_first_points(times: list[float], errs: list[float], ordered: bool):
    """Clean sorted curves take the no-copy path, the others ``cleaned()``: same points either way."""
    times = sorted(times) if ordered else times
    n = len(times)
    lc = LightCurve("o", "g", np.array(times), np.arange(n, dtype=float), np.array(errs[:n]))
    cleaned = lc.cleaned()
    prefix = period_prefix(lc, 3)
    if prefix is None:
        assert len(cleaned) < 3
        return
    k = period_points(len(cleaned), 3)
    for column in ("time", "mag", "mag_err"):
        np.testing.assert_array_equal(getattr(prefix, column), getattr(cleaned, column)[:k])
