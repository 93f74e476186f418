"""simulate writes real-schema alerts that decode back to the light curves, with labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from broker_filter.streams.archive import iter_archive
from broker_filter.streams.simulate import SimulationConfig, labels_path, simulate


@pytest.mark.parametrize("survey,out_name", [("ztf", "night.tar.gz"), ("lsst", "folder")])
def test_round_trip_to_light_curves(lightcurves_dir, tmp_path, survey, out_name):
    cfg = SimulationConfig(survey=survey, max_objects=3, seed=2, alerts_per_file=50)
    summary = simulate(lightcurves_dir, tmp_path / out_name, cfg)
    labels = pd.read_csv(labels_path(tmp_path / out_name), dtype={"object_id": str})
    assert len(labels) == summary.objects and labels["n_alerts"].sum() == summary.alerts
    items = list(iter_archive([tmp_path / out_name], order="file"))
    assert len(items) == summary.alerts and all(i.error is None for i in items)
    times = [i.alert.time for i in items]
    assert times == sorted(times)
    window = 30 if survey == "ztf" else 365
    assert all(i.alert.time - i.alert.detections[0].time <= window + 1e-9 for i in items)
    merged: dict[str, dict[int, object]] = {}
    for item in items:
        merged.setdefault(item.alert.object_id, {}).update({d.detection_id: d for d in item.alert.detections})
    points = pd.read_parquet(lightcurves_dir / "lightcurves.parquet")
    for row in labels.itertuples():
        dets = sorted(merged[row.object_id].values(), key=lambda d: (d.time, d.band))
        truth = points[points.object_id == row.lightcurve_id].sort_values(["time", "band"])
        truth = truth[truth.band.isin(["V", "g", "r", "R", "i", "u", "z"] if survey == "lsst" else ["V", "g", "r", "R", "i"])]
        assert len(dets) == len(truth) == row.n_alerts
        assert np.allclose([d.mag for d in dets], truth.mag, atol=1e-5)
        assert np.allclose([d.mag_err for d in dets], truth.mag_err, atol=1e-5)
        assert np.allclose([d.time for d in dets], truth.time)


def test_cli_limits_classes(lightcurves_dir, tmp_path, capsys, run_command):
    objects = pd.read_csv(lightcurves_dir / "objects.csv")
    wanted = objects["survey_class"].iloc[0]
    code = run_command("simulate", ["--lightcurves", str(lightcurves_dir), "--out", str(tmp_path / "s"),
                 "--max-objects", "2", "--classes", wanted, "--seed", "1"])
    assert code == 0
    labels = pd.read_csv(tmp_path / "s" / "labels.csv")
    assert set(labels.survey_class) == {wanted} and len(labels) <= 2
    assert run_command("simulate", ["--lightcurves", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
