"""The serving Scorer gives the reference scorer's results on real light curves (CPU always, CUDA when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import broker_filter.model.serving
from broker_filter.model.bundle import ModelBundle
from broker_filter.model.data import LightCurve, load_lightcurve_table, load_period_table
from broker_filter.model.lightcurve import LightCurveBatch
from broker_filter.model.serving import Scorer, pin_batch

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


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


@pytest.fixture(scope="module")
def many():
    """200 real curves (ASAS-3, Stripe 82) with their tabled periods: enough for several batches."""
    lcs = load_lightcurve_table(DATA, sources=["asas3_richards2012"])[:60] + load_lightcurve_table(
        DATA, sources=["sdss_s82_rrlyrae_sesar2010"]
    )[:140]
    table = load_period_table(DATA / "periods.csv")
    return lcs, np.array([table.get((lc.object_id, lc.band), np.nan) for lc in lcs])


def _assert_same_scores(ours, reference, rtol=1e-4):
    assert [s.object_id for s in ours] == [s.object_id for s in reference]
    for a, b in zip(ours, reference):
        assert (a.top_class, a.n_points, a.n_chunks, a.novel) == (b.top_class, b.n_points, b.n_chunks, b.novel)
        assert a.energy == pytest.approx(b.energy, rel=rtol, abs=rtol)
        np.testing.assert_allclose(list(a.probs.values()), list(b.probs.values()), rtol=rtol, atol=rtol)


def test_scorer_equals_reference_on_real_light_curves(bundle, lightcurves):
    reference = bundle.score(lightcurves, device="cpu")
    with Scorer(bundle, device="cpu", mixed_precision=False, max_batch=7, workers=2) as scorer:
        ours = scorer.score(lightcurves)
    assert len(reference) == 6  # 3 ASAS-3, 2 Stripe 82 objects (5 bands each), the live prefix
    _assert_same_scores(ours, reference)


def test_score_batch_columns_match_object_scores(bundle, many):
    lcs, periods = many
    batch = LightCurveBatch.from_lightcurves(lcs)
    with Scorer(bundle, device="cpu", workers=2) as scorer:
        columns = scorer.score_batch(batch, periods)
        objects = scorer.score(lcs, periods)
    assert list(columns.object_ids) == [s.object_id for s in objects]
    np.testing.assert_array_equal(batch.object_ids[columns.object_index], columns.object_ids)
    np.testing.assert_allclose(columns.probs.sum(axis=1), 1.0, rtol=1e-12)
    assert [columns.class_names[i] for i in columns.top_class] == [s.top_class for s in objects]
    assert columns.object_scores() == objects


def test_slices_threads_and_batches_do_not_change_scores(bundle, many, monkeypatch):
    lcs, periods = many
    batch = LightCurveBatch.from_lightcurves(lcs)
    with Scorer(bundle, device="cpu", workers=1) as scorer:
        whole = scorer.score_batch(batch, periods).object_scores()
    monkeypatch.setattr(broker_filter.model.serving, "CPU_SLICE", 7)
    with Scorer(bundle, device="cpu", workers=3, max_batch=50) as scorer:
        sliced = scorer.score_batch(batch, periods).object_scores()
    _assert_same_scores(sliced, whole, rtol=1e-5)


def test_periods_given_or_estimated_and_dirty_points(bundle, lightcurves):
    with Scorer(bundle, device="cpu", workers=2) as scorer:
        periods = scorer.estimate_periods(lightcurves)
        given = scorer.score(lightcurves, periods=periods)
        batch = LightCurveBatch.from_lightcurves(lightcurves)
        estimated_here = scorer.score_batch(batch).object_scores()  # float32 magnitudes: same periods here
        dirty = [LightCurve(lc.object_id, lc.band, lc.time[::-1], np.append(lc.mag[:-1], np.nan)[::-1], lc.mag_err[::-1])
                 for lc in lightcurves]
        dirty_scores = scorer.score(dirty, periods=periods)
        reference_dirty = scorer.score([lc.cleaned() for lc in dirty], periods=periods)
    _assert_same_scores(estimated_here, given)
    _assert_same_scores(dirty_scores, reference_dirty)
    assert np.isnan(periods[[i for i, lc in enumerate(lightcurves) if lc.band in ("u", "z")]]).all()


def test_nothing_scorable_gives_no_scores(bundle, lightcurves):
    short = [lc for lc in lightcurves if lc.source == "ztf_bts_snia_antares"]
    with Scorer(bundle, device="cpu", workers=1) as scorer:
        assert scorer.score([]) == []
        assert scorer.score(short) == bundle.score(short)
        assert len(scorer.score_batch(LightCurveBatch.from_lightcurves(short))) == 0
        with pytest.raises(ValueError, match="one value per light curve"):
            scorer.score(short, periods=[1.0])


@cuda
@pytest.mark.parametrize("mixed", [False, True])
def test_cuda_scorer_equals_cpu_reference(bundle, many, mixed, monkeypatch):
    """Same classes and flags; values to TF32 rounding (cuDNN's default for float32) or float16's."""
    lcs, periods = many
    with Scorer(bundle, device="cpu", workers=2) as cpu:
        reference = cpu.score(lcs, periods)
    batch = pin_batch(LightCurveBatch.from_lightcurves(lcs))
    with Scorer(bundle, device="cuda", mixed_precision=mixed) as scorer:
        graphed = scorer.score_batch(batch, periods).object_scores()  # under GRAPH_MAX_CHUNKS: CUDA graph
        monkeypatch.setattr(broker_filter.model.serving, "GRAPH_MAX_CHUNKS", 0)
        eager = scorer.score(lcs, periods)
    if mixed:  # float16 moves energies by up to a few percent: most verdicts, not all, must agree
        _assert_mostly_same(graphed, eager)
        _assert_mostly_same(eager, reference)
    else:  # TF32 moves the 27-number z by ~1e-3; the mixture's tight covariances amplify that in the energy
        _assert_same_scores(graphed, eager, rtol=1e-2)
        _assert_same_scores(eager, reference, rtol=1e-2)


def _assert_mostly_same(ours, reference):
    assert [s.object_id for s in ours] == [s.object_id for s in reference]
    assert [(s.n_points, s.n_chunks) for s in ours] == [(s.n_points, s.n_chunks) for s in reference]
    same_class = np.mean([a.top_class == b.top_class for a, b in zip(ours, reference)])
    same_flags = np.mean([a.novel == b.novel for a, b in zip(ours, reference)])
    energy = np.array([[a.energy, b.energy] for a, b in zip(ours, reference)])
    assert same_class >= 0.97 and same_flags >= 0.95
    np.testing.assert_allclose(energy[:, 0], energy[:, 1], rtol=0.05, atol=0.05)


@cuda
def test_cuda_pipeline_of_many_batches(bundle, many):
    lcs, periods = many
    batch = LightCurveBatch.from_lightcurves(lcs)
    with Scorer(bundle, device="cuda", mixed_precision=False) as whole, Scorer(bundle, device="cuda", mixed_precision=False, max_batch=16) as parts:
        one = whole.score_batch(batch, periods).object_scores()
        many_parts = parts.score_batch(batch, periods).object_scores()
        again = parts.score_batch(pin_batch(batch), periods).object_scores()  # staging buffer reused
    _assert_same_scores(many_parts, one, rtol=1e-2)
    _assert_same_scores(again, many_parts, rtol=2e-3)


@cuda
def test_cuda_dirty_batch_is_cleaned_and_pipelined_batches_agree(bundle, many):
    lcs, periods = many
    dirty = [LightCurve(lc.object_id, lc.band, lc.time[::-1], np.append(lc.mag[:-1], np.nan)[::-1], lc.mag_err[::-1]) for lc in lcs]
    with Scorer(bundle, device="cuda", mixed_precision=False) as scorer:
        from_dirty = scorer.score_batch(LightCurveBatch.from_lightcurves(dirty), periods).object_scores()
        cleaned = scorer.score([lc.cleaned() for lc in dirty], periods)
        first = scorer.submit(LightCurveBatch.from_lightcurves(lcs[:100]), periods[:100])
        second = scorer.submit(LightCurveBatch.from_lightcurves(lcs[100:]), periods[100:])
        both = first.result().object_scores() + second.result().object_scores()
        alone = scorer.score(lcs[:100], periods[:100]) + scorer.score(lcs[100:], periods[100:])
    _assert_same_scores(from_dirty, cleaned, rtol=2e-3)
    _assert_same_scores(both, alone, rtol=2e-3)


def test_the_period_search_runs_on_the_scorers_device(bundle, lightcurves, monkeypatch):
    """``[inference] device = "cpu"`` must keep the period search off a GPU that is present."""
    import broker_filter.model.period as period

    asked = []
    real = period.estimate_periods

    def spy(*args, **kwargs):
        asked.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(period, "estimate_periods", spy)
    with Scorer(bundle, device="cpu") as scorer:
        scorer.estimate_periods(lightcurves[:3])
    assert asked == ["cpu"]
