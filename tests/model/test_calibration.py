"""Calibration: conformal p-values by number of points, and the temperature."""

from __future__ import annotations

import numpy as np
import pytest

from broker_filter.model.calibration import Calibration, calibration_curves, fit_calibration, fit_temperature, novel_flags
from broker_filter.model.lightcurve import LightCurve


def test_p_values_hold_their_rate_in_every_bin_although_energies_shift_with_points():
    rng = np.random.default_rng(0)
    n_points = rng.integers(20, 400, size=200_000)
    energies = rng.normal(size=n_points.size) + 30.0 / np.sqrt(n_points)  # short curves score higher
    fit, test = slice(0, 100_000), slice(100_000, None)
    calibration = fit_calibration(np.zeros((100_000, 2)), np.zeros(100_000, int), energies[fit], n_points[fit],
                                  combine=False)
    p = calibration.p_values(energies[test], n_points[test])
    flags = novel_flags(p)
    for low, high in ((20, 30), (30, 50), (50, 100), (100, 200), (200, 400)):
        pick = (n_points[test] >= low) & (n_points[test] < high)
        assert flags[pick, 0].mean() == pytest.approx(0.20, abs=0.035)
        assert flags[pick, 1].mean() == pytest.approx(0.05, abs=0.015)
    one_threshold = energies[test] > np.quantile(energies[fit], 0.95)
    assert one_threshold[n_points[test] < 30].mean() > 0.2  # what a single threshold does to young objects


def test_p_value_is_the_share_at_least_as_high_and_a_missing_bin_borrows_its_neighbour():
    calibration = fit_calibration(np.zeros((4, 2)), np.zeros(4, int), [1.0, 2.0, 3.0, 4.0], [25, 25, 60, 60],
                                  combine=False)
    assert calibration.p_values(np.array([2.0, 0.0, 9.0]), np.array([25, 25, 25])).tolist() == [2 / 3, 1.0, 1 / 3]
    assert calibration.p_values(np.array([3.5]), np.array([500]))[0] == pytest.approx(2 / 3)  # 200+ borrows 50-99
    again = Calibration.from_dict(calibration.to_dict())
    assert again.p_values(np.array([3.5]), np.array([500]))[0] == pytest.approx(2 / 3) and again.temperature == calibration.temperature


def _known_and_novel(rng, size, novel_share=0.0):
    """Rows of (log-probabilities, labels, energies, points): known-class rows, whose energy
    falls and whose class gets clearer with points; novel rows are unusual in energy OR in
    uncertainty, never both."""
    n_points = rng.integers(20, 400, size=size)
    clarity = np.sqrt(n_points / 20.0)
    labels = rng.integers(0, 3, size=size)
    logits = rng.normal(size=(size, 3)) + clarity[:, None] * 2.0 * np.eye(3)[labels]
    energies = rng.normal(size=size) + 30.0 / np.sqrt(n_points)
    novel = rng.random(size) < novel_share
    in_energy = novel & (rng.random(size) < 0.5)
    energies[in_energy] += 2.5
    logits[novel & ~in_energy] = rng.normal(size=((novel & ~in_energy).sum(), 3)) * 0.3  # lost between classes
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_probs, labels, energies, n_points, novel


def test_combined_p_values_hold_their_rate_and_catch_what_either_score_alone_misses():
    from sklearn.metrics import roc_auc_score

    from broker_filter.model.scores import calibrated_probs

    rng = np.random.default_rng(2)
    log_probs, labels, energies, n_points, _ = _known_and_novel(rng, 60_000)
    combined = fit_calibration(log_probs, labels, energies, n_points, combine=True)
    energy_only = fit_calibration(log_probs, labels, energies, n_points)
    assert combined.combines and not energy_only.combines
    test_lp, _, test_energy, test_points, novel = _known_and_novel(rng, 60_000, novel_share=0.2)
    probs = calibrated_probs(test_lp, combined, test_points)
    p = combined.p_values(test_energy, test_points, probs)
    flags = novel_flags(p[~novel])
    for low, high in ((20, 30), (30, 50), (50, 100), (100, 200), (200, 400)):
        pick = (test_points[~novel] >= low) & (test_points[~novel] < high)
        assert flags[pick, 1].mean() == pytest.approx(0.05, abs=0.015)
    auroc_combined = roc_auc_score(novel, -p)
    auroc_energy = roc_auc_score(novel, -energy_only.p_values(test_energy, test_points))
    assert auroc_combined > auroc_energy + 0.1
    with pytest.raises(ValueError, match="class probabilities are needed"):
        combined.p_values(test_energy, test_points)
    again = Calibration.from_dict(combined.to_dict())
    assert np.array_equal(again.p_values(test_energy, test_points, probs), p)


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5000, 4)) * 2.0
    labels = np.array([rng.choice(4, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    assert fit_temperature(logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)


def test_calibration_curves_are_the_stream_prefixes_and_the_whole_curve():
    t = np.arange(60, dtype=float)
    curves = (LightCurve("a", "g", t, t * 0 + 15, t * 0 + 0.1), LightCurve("a", "r", t + 0.5, t * 0 + 14, t * 0 + 0.1))
    made = calibration_curves({"a": curves}, prefixes=(20, 50, 200))
    sizes = {}
    for lc in made:
        sizes[lc.object_id] = sizes.get(lc.object_id, 0) + len(lc)
    assert sizes == {"a#20": 20, "a#50": 50, "a#all": 120}
