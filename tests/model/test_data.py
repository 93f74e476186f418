"""Loaders: the project's table layout, ASAS-3 .dat files and the ASAS-SN export, on real light curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from broker_filter.model.data import (
    DataError,
    LightCurve,
    lightcurves_digest,
    load_asas3_dat,
    load_asassn,
    load_lightcurve_table,
    load_period_table,
    save_period_table,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"


@pytest.fixture(scope="module")
def stripe82() -> list[LightCurve]:
    return load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"])


@pytest.fixture(scope="module")
def asas3_star() -> LightCurve:
    return next(lc for lc in load_lightcurve_table(DATA, sources=["asas3_richards2012"]) if lc.label == "RR_Lyrae_FM")


def test_table_gives_one_lightcurve_per_object_and_band(stripe82):
    objects = pd.read_csv(DATA / "objects.csv")
    s82 = objects[objects["source"] == "sdss_s82_rrlyrae_sesar2010"]
    assert len({lc.object_id for lc in stripe82}) == len(s82)
    assert len(stripe82) == sum(len(bands) for bands in s82["bands"].astype(str))  # "giruz": one letter a band
    assert {lc.band for lc in stripe82} == set("ugriz")
    for lc in stripe82[:50]:
        assert np.all(np.diff(lc.time) >= 0)
        assert lc.label in {"RRab", "RRc"} and lc.period is not None and lc.source == "sdss_s82_rrlyrae_sesar2010"


def test_table_band_filter_and_missing_files(tmp_path):
    lcs = load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"], bands=["g"])
    assert {lc.band for lc in lcs} == {"g"}
    with pytest.raises(DataError, match="no such file"):
        load_lightcurve_table(tmp_path)


def test_observations_of_unknown_objects_are_refused(tmp_path):
    pd.read_parquet(DATA / "lightcurves.parquet").head(100).to_parquet(tmp_path / "lightcurves.parquet")
    pd.DataFrame({"object_id": ["other"], "source": ["x"], "survey_class": ["Mira"], "period": [None]}).to_csv(
        tmp_path / "objects.csv", index=False
    )
    with pytest.raises(DataError, match="not in objects.csv"):
        load_lightcurve_table(tmp_path)


def test_lightcurve_cleaning_drops_bad_points_and_sorts():
    lc = LightCurve("x", "V", [3.0, 1.0, 2.0, np.nan], [10.0, 11.0, np.inf, 12.0], [0.1, 0.1, 0.1, 0.1]).cleaned()
    assert lc.time.tolist() == [1.0, 3.0] and lc.mag.tolist() == [11.0, 10.0]
    with pytest.raises(DataError, match="one length"):
        LightCurve("x", "V", [1.0, 2.0], [1.0], [0.1, 0.1])


def test_asas3_three_column_files_full_and_reduced_hjd(tmp_path, asas3_star):
    hjd = asas3_star.time + 2400000.5
    full, reduced = tmp_path / "star_a.dat", tmp_path / "star_b.dat"
    np.savetxt(full, np.c_[hjd, asas3_star.mag, asas3_star.mag_err], header="HJD MAG ERR")
    np.savetxt(reduced, np.c_[hjd - 2450000.0, asas3_star.mag, asas3_star.mag_err], delimiter=",")
    a, b = load_asas3_dat([full, reduced], labels={"star_a": "RR_Lyrae_FM"})
    for lc in (a, b):
        np.testing.assert_allclose(lc.time, asas3_star.time, atol=1e-6)
        np.testing.assert_allclose(lc.mag, asas3_star.mag, atol=1e-5)
        assert lc.band == "V"
    assert a.label == "RR_Lyrae_FM" and b.label is None


def test_asas3_acvs_files_keep_grades_a_and_b_aperture_0(tmp_path):
    rows = [
        "# HJD MAG_0 MAG_1 MAG_2 MAG_3 MAG_4 MER_0 MER_1 MER_2 MER_3 MER_4 GRADE FRAME",
        "1868.8 11.1 11.2 11.3 11.4 11.5 0.03 0.04 0.05 0.06 0.07 A 100",
        "1869.8 11.0 11.2 11.3 11.4 11.5 0.02 0.04 0.05 0.06 0.07 B 101",
        "1870.8 29.999 11.2 11.3 11.4 11.5 0.02 0.04 0.05 0.06 0.07 A 102",
        "1871.8 10.9 11.2 11.3 11.4 11.5 0.02 0.04 0.05 0.06 0.07 D 103",
    ]
    path = tmp_path / "acvs.dat"
    path.write_text("\n".join(rows) + "\n")
    (lc,) = load_asas3_dat([path])
    assert lc.mag.tolist() == [11.1, 11.0] and lc.mag_err.tolist() == [0.03, 0.02]
    np.testing.assert_allclose(lc.time[0], 1868.8 + 2450000.0 - 2400000.5)


def test_asas3_bad_files_raise(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_text("1 2\n")
    with pytest.raises(DataError, match="columns"):
        load_asas3_dat([bad])
    with pytest.raises(DataError, match="no such file"):
        load_asas3_dat([tmp_path / "missing.dat"])


def _asassn_export(tmp_path: Path, star: LightCurve) -> tuple[Path, Path]:
    lc_dir = tmp_path / "lcs"
    lc_dir.mkdir()
    n = len(star)
    table = pd.DataFrame({
        "HJD": star.time + 2400000.5,
        "UT Date": "2015-01-01",
        "Camera": "bd",
        "FWHM": 1.5,
        "Limit": 17.0,
        "mag": [f"{m:.3f}" for m in star.mag],
        "mag_err": star.mag_err,
        "flux(mJy)": 1.0,
        "flux_err": 0.1,
        "Filter": ["V" if i % 3 else "g" for i in range(n)],
    })
    table.loc[[1, 4], "mag"] = [">17.20", ">16.90"]
    table.to_csv(lc_dir / "ASASSN-V_J000000.00+000000.0.csv", index=False)
    catalogue = pd.DataFrame({
        "asassn_name": ["ASASSN-V J000000.00+000000.0", "ASASSN-V J000001.00+000000.0", "ASASSN-V J000002.00+000000.0"],
        "period": [0.55, 1.2, 3.0],
        "variable_type": ["RRAB", "EW", "DCEP"],
        "class_probability": [0.95, 0.99, 0.5],
    })
    catalogue.to_csv(tmp_path / "catalogue.csv", index=False)
    return tmp_path / "catalogue.csv", lc_dir


def test_asassn_export_drops_upper_limits_and_low_probability(tmp_path, asas3_star):
    catalogue, lc_dir = _asassn_export(tmp_path, asas3_star)
    lcs = load_asassn(catalogue, lc_dir, class_prob=0.9)
    assert {lc.band for lc in lcs} == {"V", "g"}
    assert {lc.object_id for lc in lcs} == {"ASASSN-V J000000.00+000000.0"}  # no file for the 2nd, 3rd below the cut
    assert sum(len(lc) for lc in lcs) == len(asas3_star) - 2
    assert all(lc.label == "RRAB" and lc.period == 0.55 for lc in lcs)
    assert load_asassn(catalogue, lc_dir, class_prob=0.99) == []


def test_asassn_catalogue_without_class_column_is_refused(tmp_path):
    pd.DataFrame({"asassn_name": ["a"], "period": [1.0], "class_probability": [1.0]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="none of the columns"):
        load_asassn(tmp_path / "c.csv", tmp_path)


def test_digest_and_period_table_round_trip(tmp_path, stripe82):
    assert lightcurves_digest(stripe82[:5]) == lightcurves_digest(list(reversed(stripe82[:5])))
    assert lightcurves_digest(stripe82[:5]) != lightcurves_digest(stripe82[:4])
    periods = {(lc.object_id, lc.band): lc.period for lc in stripe82[:10]}
    save_period_table(tmp_path / "p.csv", periods)
    loaded = load_period_table(tmp_path / "p.csv")
    assert loaded.keys() == periods.keys()
    for key, value in periods.items():
        assert loaded[key] == pytest.approx(value, rel=1e-8)


def test_committed_period_table_covers_every_lightcurve():
    lcs = load_lightcurve_table(DATA)
    table = load_period_table(DATA / "periods.csv")
    assert all((lc.object_id, lc.band) in table for lc in lcs)
