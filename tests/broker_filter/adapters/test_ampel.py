"""The AMPEL T2 unit, built and run with ampel-interface's own types on real ZTF alerts' datapoints."""

from __future__ import annotations

import logging

import pytest
from adapter_support import points, real_alerts

from broker_filter import Classifier, from_ztf

pytest.importorskip("ampel.view.LightCurve", reason="ampel-photometry (PyPI) provides AbsLightCurveT2Unit")
from ampel.view.LightCurve import LightCurve  # noqa: E402

from broker_filter.adapters.ampel.T2BrokerFilter import T2BrokerFilter  # noqa: E402


def _light_curves() -> dict[str, LightCurve]:
    """Each object's every detection across its alerts, as AMPEL's T1 compound holds them (datapoint id = candid)."""
    by_object: dict[str, dict[int, dict]] = {}
    for alert in real_alerts():
        for point in points(alert):
            if point["candid"] is not None:
                by_object.setdefault(alert["objectId"], {})[point["candid"]] = point
    curves = {}
    for stock, (object_id, found) in enumerate(sorted(by_object.items())):
        datapoints = [{"id": candid, "stock": stock, "body": body} for candid, body in found.items()]
        curves[object_id] = LightCurve.build({"link": stock, "stock": stock}, datapoints)
    return curves


def test_the_t2_body_equals_classify_on_the_objects_points():
    unit = T2BrokerFilter(logger=logging.getLogger("t2-broker-filter"))
    classifier = Classifier.load(device="cpu")
    scored = 0
    for object_id, curve in _light_curves().items():
        body = unit.process(curve)
        rows = [dp["body"] for dp in curve.get_photopoints()]
        frame = from_ztf(*([r[k] for r in rows] for k in ("jd", "fid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "isdiffpos")),
                         distnr=[r["distnr"] for r in rows], object_id=str(curve.stock_id))
        want = classifier.classify(frame).iloc[0]
        assert body["scored"] == bool(want.scored), object_id
        if body["scored"]:
            scored += 1
            assert body["top_class"] == want.top_class and body["n_points"] == want.n_points
            assert body["energy"] == pytest.approx(want.energy, abs=1e-4)
            assert set(body) >= {"probabilities", "novelty_p_value", "novel", "bands_used", "bundle_id"}
    assert scored >= 18  # the demo's 18 stars: AMPEL holds their whole history, not one alert's 30 days


def test_an_object_with_upper_limits_only_is_not_scored():
    curve = LightCurve.build({"link": 1, "stock": 1}, [{"id": -5, "stock": 1, "body": {"jd": 2459000.5, "fid": 1, "diffmaglim": 20.0}}])
    body = T2BrokerFilter(logger=logging.getLogger("t2")).process(curve)
    assert body["scored"] is False and body["top_class"] is None and body["bundle_id"]
