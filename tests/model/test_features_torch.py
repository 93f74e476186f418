"""The torch preprocessing of the served path equals the numpy training reference on real curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from broker_filter.model.data import load_lightcurve_table, load_period_table
from broker_filter.model.features import PreprocessConfig, chunk_layout, prepare_batch, prepare_chunks
from broker_filter.model.lightcurve import LightCurveBatch

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def curves():
    """Long ASAS-3 curves (several chunks, a remainder) and five-band Stripe 82 curves (short)."""
    lcs = load_lightcurve_table(DATA, sources=["asas3_richards2012"])[:8] + load_lightcurve_table(
        DATA, sources=["sdss_s82_rrlyrae_sesar2010"]
    )[:10]
    table = load_period_table(DATA / "periods.csv")
    return lcs, np.array([table.get((lc.object_id, lc.band), 1.0) for lc in lcs])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fold", [True, False])
def test_prepare_chunks_equals_prepare_batch(curves, device, fold):
    lcs, periods = curves
    cfg = PreprocessConfig(bands=None, period_fold=fold)
    reference = prepare_batch(lcs, cfg, periods)
    batch = LightCurveBatch.from_lightcurves(lcs)
    chunk_lc, start, lengths = chunk_layout(batch.lengths, cfg, lc_start=batch.offsets[:-1])
    np.testing.assert_array_equal(chunk_lc, reference.owner)
    np.testing.assert_array_equal(lengths, reference.lengths)
    ours = prepare_chunks(
        torch.from_numpy(batch.time).to(device),
        torch.from_numpy(batch.mag).to(device),
        torch.from_numpy(start).to(device),
        torch.from_numpy(lengths).to(device),
        torch.from_numpy(periods[chunk_lc]).to(device),
        reference.inputs.shape[1],
        cfg,
    )
    mask = reference.mask
    inputs = ours.inputs.cpu().numpy()
    # float32 magnitudes (the served columns) against float64 ones: scaled values agree to ~1e-5.
    np.testing.assert_allclose(inputs[..., 0][mask], reference.inputs[..., 0][mask], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(inputs[..., 1][mask], reference.inputs[..., 1][mask], rtol=1e-4, atol=5e-5)
    assert not inputs[~mask].any()
    np.testing.assert_allclose(ours.supports.cpu().numpy(), reference.supports, rtol=1e-5)
