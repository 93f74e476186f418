"""The columnar LightCurveBatch: round trip with LightCurve lists, cleaning, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from broker_filter.model.data import load_lightcurve_table
from broker_filter.model.lightcurve import DataError, LightCurve, LightCurveBatch

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"


@pytest.fixture(scope="module")
def real() -> list[LightCurve]:
    """Stripe 82 objects in five bands (several curves per object) and long ASAS-3 curves."""
    return load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"])[:10] + load_lightcurve_table(
        DATA, sources=["asas3_richards2012"]
    )[:2]


def test_round_trip_keeps_every_curve(real):
    batch = LightCurveBatch.from_lightcurves(real)
    assert len(batch) == len(real) and batch.lengths.tolist() == [len(lc) for lc in real]
    assert list(batch.object_ids) == list(dict.fromkeys(lc.object_id for lc in real))  # first-appearance order
    for ours, theirs in zip(batch.to_lightcurves(), real):
        assert (ours.object_id, ours.band) == (theirs.object_id, theirs.band)
        np.testing.assert_array_equal(ours.time, theirs.time)
        np.testing.assert_allclose(ours.mag, theirs.mag, rtol=1e-7)  # float32 magnitudes
        np.testing.assert_allclose(ours.mag_err, theirs.mag_err, rtol=1e-7)


def test_from_arrays_numbers_objects_in_first_appearance_order(real):
    batch = LightCurveBatch.from_lightcurves(real)
    again = LightCurveBatch.from_arrays(
        batch.time, batch.mag, batch.mag_err, batch.lengths, batch.band, [lc.object_id for lc in real]
    )
    np.testing.assert_array_equal(again.object_index, batch.object_index)
    np.testing.assert_array_equal(again.object_ids, batch.object_ids)


def test_cleaned_equals_lightcurve_cleaned_on_dirty_unsorted_curves(real):
    rng = np.random.default_rng(5)
    dirty = []
    for lc in real:
        order = rng.permutation(len(lc))
        mag, err = lc.mag[order].copy(), lc.mag_err[order].copy()
        mag[rng.integers(len(lc), size=2)] = np.nan
        err[rng.integers(len(lc))] = 0.0
        dirty.append(LightCurve(lc.object_id, lc.band, lc.time[order], mag, err))
    batch = LightCurveBatch.from_lightcurves(dirty)
    clean = batch.cleaned()
    assert clean is not batch and LightCurveBatch.from_lightcurves(real).cleaned().time.size == sum(len(lc) for lc in real)
    for ours, lc in zip(clean.to_lightcurves(), dirty):
        reference = lc.cleaned()
        np.testing.assert_array_equal(ours.time, reference.time)
        np.testing.assert_allclose(ours.mag, reference.mag, rtol=1e-7)
    clean_batch = LightCurveBatch.from_lightcurves(real)
    assert clean_batch.cleaned() is clean_batch  # the fast path returns the batch itself


def test_inconsistent_columns_are_refused(real):
    batch = LightCurveBatch.from_lightcurves(real[:2])
    with pytest.raises(DataError, match="offsets"):
        LightCurveBatch(batch.time, batch.mag, batch.mag_err, batch.offsets + 1, batch.band, batch.object_index, batch.object_ids)
    with pytest.raises(DataError, match="float64 time"):
        LightCurveBatch(batch.time.astype(np.float32), batch.mag, batch.mag_err, batch.offsets, batch.band, batch.object_index, batch.object_ids)
    with pytest.raises(DataError, match="object_index"):
        LightCurveBatch(batch.time, batch.mag, batch.mag_err, batch.offsets, batch.band, batch.object_index + 5, batch.object_ids)
