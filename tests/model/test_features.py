"""Preprocessing: chunks, folding, lags, scaling, weights, supports, padding — on real light curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from broker_filter.model.data import LightCurve, load_lightcurve_table, load_period_table
from broker_filter.model.features import (
    PreparedBatch,
    PreprocessConfig,
    PreprocessError,
    chunk,
    chunk_counts,
    prepare_batch,
    resolve_periods,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"


@pytest.fixture(scope="module")
def real() -> list[LightCurve]:
    asas = load_lightcurve_table(DATA, sources=["asas3_richards2012"])[:6]
    s82 = load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"])[:10]
    return asas + s82


@pytest.fixture(scope="module")
def periods(real) -> np.ndarray:
    table = load_period_table(DATA / "periods.csv")
    return np.array([table[(lc.object_id, lc.band)] for lc in real])


def test_chunk_counts_keep_a_remainder_of_at_least_n_min():
    cfg = PreprocessConfig(n_min=20, n_max=200)
    assert chunk_counts(np.array([450, 410, 200, 199, 20, 19, 0]), cfg).tolist() == [3, 2, 1, 1, 1, 0, 0]


def test_chunk_matches_prepare_batch_lengths(real, periods):
    cfg = PreprocessConfig(n_min=20, n_max=200)
    batch = prepare_batch(real, cfg, periods)
    expected = [len(piece) for lc in real if cfg.accepts(lc.band) for piece in chunk(lc, cfg)]
    assert batch.lengths.tolist() == expected
    assert all(len(piece) <= 200 for lc in real for piece in chunk(lc, cfg))


def test_batch_arrays_are_centred_scaled_weighted_and_padded(real, periods):
    cfg = PreprocessConfig()
    batch = prepare_batch(real, cfg, periods)
    n, t, _ = batch.inputs.shape
    assert batch.inputs.dtype == np.float32 and batch.weights.shape == (n, t) and batch.supports.shape == (n, 3)
    mask = batch.mask
    mags = np.where(mask, batch.inputs[:, :, 1], 0.0)
    np.testing.assert_allclose(mags.sum(axis=1) / batch.lengths, 0.0, atol=1e-4)
    np.testing.assert_allclose(np.sqrt((mags**2).sum(axis=1) / batch.lengths), 1.0, atol=1e-3)
    np.testing.assert_allclose(batch.weights.sum(axis=1) / batch.lengths, 1.0, rtol=1e-4)
    assert np.all(batch.inputs[~mask] == 0) and np.all(batch.weights[~mask] == 0)
    lags = batch.inputs[:, :, 0]
    assert np.all(lags[:, 0] == 0) and np.all(lags[mask] >= 0)
    # folded: phases in [0, 1) sorted, so the lags of a chunk sum to less than one cycle
    assert np.all(lags.sum(axis=1) < 1.0)
    owners = [real[i] for i in batch.owner]
    np.testing.assert_allclose(batch.supports[:, 2], np.log10(periods[batch.owner]), rtol=1e-5)
    first = owners[0]
    np.testing.assert_allclose(batch.supports[0, 0], first.mag[: batch.lengths[0]].mean(), rtol=1e-5)
    np.testing.assert_allclose(batch.supports[0, 1], first.mag[: batch.lengths[0]].std(), rtol=1e-4)


def test_unfolded_lags_are_days(real, periods):
    batch = prepare_batch(real[:1], PreprocessConfig(period_fold=False), periods[:1])
    lc = real[0]
    np.testing.assert_allclose(batch.inputs[0, 1 : batch.lengths[0], 0], np.diff(lc.time[: batch.lengths[0]]), rtol=1e-5)


def test_bands_short_curves_and_bad_points(real, periods):
    cfg = PreprocessConfig(n_min=10, bands=("g",))
    lc = real[-1]
    short = LightCurve("live", "g", lc.time[:12], lc.mag[:12], lc.mag_err[:12])
    too_short = LightCurve("new", "g", lc.time[:9], lc.mag[:9], lc.mag_err[:9])
    noisy = LightCurve("bad", "g", np.r_[lc.time[:15], np.nan], np.r_[lc.mag[:15], 1.0], np.r_[lc.mag_err[:15], 0.1])
    wrong_band = LightCurve("u", "u", lc.time, lc.mag, lc.mag_err)
    batch = prepare_batch([wrong_band, short, too_short, noisy], cfg, [1.0, 0.5, 0.5, 0.5])
    assert batch.owner.tolist() == [1, 3] and batch.lengths.tolist() == [12, 15]
    assert batch.inputs.shape[1] == 15
    assert np.isnan(batch.periods[[0, 2]]).all() and batch.periods[1] == 0.5
    padded = prepare_batch([short], cfg, [0.5], pad_to=200)
    assert padded.inputs.shape == (1, 200, 2)
    np.testing.assert_array_equal(padded.inputs[:, :12], batch.inputs[:1, :12])


def test_unsorted_input_is_sorted_and_empty_input_is_empty(real, periods):
    lc = real[0]
    order = np.random.default_rng(0).permutation(len(lc))
    shuffled = LightCurve(lc.object_id, lc.band, lc.time[order], lc.mag[order], lc.mag_err[order])
    a = prepare_batch([lc], PreprocessConfig(), periods[:1])
    b = prepare_batch([shuffled], PreprocessConfig(), periods[:1])
    np.testing.assert_array_equal(a.inputs, b.inputs)
    empty = prepare_batch([], PreprocessConfig())
    assert isinstance(empty, PreparedBatch) and len(empty) == 0 and empty.inputs.shape[2] == 2


def test_periods_must_match_the_lightcurves(real):
    with pytest.raises(PreprocessError, match="one value per light curve"):
        prepare_batch(real, PreprocessConfig(), [1.0])
    with pytest.raises(PreprocessError, match="n_min"):
        PreprocessConfig(n_min=300, n_max=200)


def test_periods_are_estimated_or_taken_from_the_catalogue(real):
    s82 = real[-1]
    cfg = PreprocessConfig(use_catalogue_period=True)
    assert resolve_periods([s82], cfg)[0] == s82.period
    tiny = LightCurve("tiny", "g", s82.time[:3], s82.mag[:3], s82.mag_err[:3])
    (span,) = resolve_periods([tiny], PreprocessConfig())
    assert span == pytest.approx(np.ptp(tiny.time))  # no period estimable: one cycle over the span


def test_config_round_trip():
    cfg = PreprocessConfig(n_min=5, bands=("g", "r"))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(PreprocessError, match="unknown"):
        PreprocessConfig.from_dict({"n_min": 5, "extra": 1})
