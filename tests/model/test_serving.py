"""The serving Scorer gives the reference scorer's results (CPU, float32) on real light curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.bundle import ModelBundle
from model.data import LightCurve, load_lightcurve_table
from model.features import prepare_batch
from model.serving import Scorer

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle.load()


@pytest.fixture(scope="module")
def lightcurves():
    """Real curves of every kind the daemon sees: long ASAS-3 (several chunks), Stripe 82 in
    five bands (several light curves per object, u and z not read by the model), a short
    ZTF transient (no chunk) and a live-like prefix shorter than one chunk."""
    asas = load_lightcurve_table(DATA, sources=["asas3_richards2012"])[:3]
    s82 = load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"])[:10]
    ztf = load_lightcurve_table(DATA, sources=["ztf_bts_snia_antares"])[:2]
    live = asas[0]
    prefix = LightCurve("live_prefix", live.band, live.time[:57], live.mag[:57], live.mag_err[:57])
    return asas + s82 + ztf + [prefix]


def _assert_same_scores(ours, reference):
    assert [s.object_id for s in ours] == [s.object_id for s in reference]
    for a, b in zip(ours, reference):
        assert (a.top_class, a.n_points, a.n_chunks, a.novel) == (b.top_class, b.n_points, b.n_chunks, b.novel)
        assert a.energy == pytest.approx(b.energy, rel=1e-4, abs=1e-4)
        np.testing.assert_allclose(list(a.probs.values()), list(b.probs.values()), rtol=1e-4, atol=1e-6)


def test_scorer_equals_reference_on_real_light_curves(bundle, lightcurves):
    reference = bundle.score(lightcurves, device="cpu")
    with Scorer(bundle, device="cpu", mixed_precision=False, max_batch=7, workers=2) as scorer:
        ours = scorer.score(lightcurves)
    assert len(reference) == 6  # 3 ASAS-3, 2 Stripe 82 objects (5 bands each), the live prefix
    _assert_same_scores(ours, reference)


def test_given_periods_and_preprocessing_slices_match_one_batch(bundle, lightcurves, monkeypatch):
    import model.serving

    with Scorer(bundle, device="cpu", mixed_precision=False, workers=2) as scorer:
        periods = scorer.estimate_periods(lightcurves)
        whole = scorer.score(lightcurves, periods=periods)
        monkeypatch.setattr(model.serving, "PREPARE_SLICE", 3)  # many slices through the thread pool
        sliced_batch = scorer.prepare(lightcurves, periods)
        reference_batch = prepare_batch(lightcurves, bundle.preprocess, periods, pad_to=bundle.preprocess.n_max)
        np.testing.assert_array_equal(sliced_batch.owner, reference_batch.owner)
        np.testing.assert_array_equal(sliced_batch.inputs, reference_batch.inputs)
        np.testing.assert_array_equal(sliced_batch.supports, reference_batch.supports)
        sliced = scorer.score(lightcurves, periods=periods)
    _assert_same_scores(sliced, whole)
    assert np.isnan(periods[[i for i, lc in enumerate(lightcurves) if lc.band in ("u", "z")]]).all()


def test_nothing_scorable_gives_no_scores(bundle, lightcurves):
    short = [lc for lc in lightcurves if lc.source == "ztf_bts_snia_antares"]
    with Scorer(bundle, device="cpu", workers=1) as scorer:
        assert scorer.score([]) == []
        assert scorer.score(short) == bundle.score(short)
        with pytest.raises(ValueError, match="one value per light curve"):
            scorer.score(short, periods=[1.0])
