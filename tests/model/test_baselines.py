"""The baselines: standard light-curve features, forests, and the per-object combination."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from broker_filter.model.baselines import (
    FeatureRows,
    fit_isolation_forest,
    fit_random_forest,
    forest_object_probabilities,
    forest_row_predictions,
    isolation_object_scores,
    lightcurve_features,
)
from broker_filter.model.data import load_lightcurve_table

EVAL_DATA = Path(__file__).resolve().parents[1] / "data" / "lightcurves_eval"


@pytest.fixture(scope="module")
def real_curves():
    return load_lightcurve_table(EVAL_DATA)


def test_lightcurve_features_on_real_curves(real_curves):
    long_curves = [lc for lc in real_curves if len(lc) >= 50][:5]
    values, names = lightcurve_features([(lc.time, lc.mag, lc.mag_err) for lc in long_curves])
    assert values.shape == (5, len(names))
    assert "amplitude" in names and "periodogram_period_0" in names
    assert np.all(np.isfinite(values))
    amplitude = values[:, names.index("amplitude")]
    expected = [(lc.mag.max() - lc.mag.min()) / 2 for lc in long_curves]  # half peak-to-peak
    np.testing.assert_allclose(amplitude, expected, rtol=1e-6)


def test_too_short_curve_gives_nan_row_not_a_crash():
    values, names = lightcurve_features([(np.array([1.0, 2.0]), np.array([10.0, 10.5]), np.array([0.1, 0.1]))])
    assert values.shape == (1, len(names)) and np.all(np.isnan(values))


def test_non_finite_points_are_dropped():
    t = np.arange(30, dtype=float)
    m = np.sin(t)
    e = np.full(30, 0.05)
    clean, _ = lightcurve_features([(t, m, e)])
    m_bad, e_bad = m.copy(), e.copy()
    m_bad[3], e_bad[7] = np.nan, 0.0
    keep = np.ones(30, bool)
    keep[[3, 7]] = False
    dirty, _ = lightcurve_features([(t, m_bad, e_bad)])
    expected, _ = lightcurve_features([(t[keep], m[keep], e[keep])])
    np.testing.assert_allclose(dirty, expected)
    assert not np.allclose(clean, dirty)


def _two_clusters(seed: int = 0) -> FeatureRows:
    rng = np.random.default_rng(seed)
    features = np.vstack([rng.normal(0, 0.1, (40, 3)), rng.normal(5, 0.1, (40, 3))])
    owner = np.repeat(np.arange(20), 4)  # 4 rows per object, objects 0-9 class A, 10-19 class B
    return FeatureRows(features, owner, [f"o{i}" for i in range(20)], ["A"] * 10 + ["B"] * 10)


def test_forest_probabilities_are_per_object_means_in_the_given_class_order():
    rows = _two_clusters()
    forest = fit_random_forest(rows, seed=0)
    probs = forest_object_probabilities(forest, rows, ["B", "C", "A"])  # C never seen in training
    assert probs.shape == (20, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs[:, 1] == 0.0)
    assert np.all(probs[:10, 2] > 0.9) and np.all(probs[10:, 0] > 0.9)
    assert list(forest_row_predictions(forest, rows)) == list(rows.row_labels)


def test_isolation_forest_scores_outliers_higher():
    rows = _two_clusters()
    train = FeatureRows(rows.features[:40], rows.owner[:40], rows.object_ids[:10], rows.labels[:10])  # cluster A only
    forest = fit_isolation_forest(train, seed=0)
    scores = isolation_object_scores(forest, rows)
    assert scores[10:].min() > scores[:10].max()


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        FeatureRows(np.zeros((3, 2)), np.zeros(2, dtype=int), ["a"], ["A"])
