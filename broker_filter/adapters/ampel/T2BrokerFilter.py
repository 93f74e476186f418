"""The AMPEL T2 unit: an AMPEL light curve (ZTF datapoints) in, the classification as the T2 body out.

AMPEL units live in a module of their own name (AMPEL loads ``T2BrokerFilter`` from
``broker_filter.adapters.ampel.T2BrokerFilter``). The unit reads the ZTF photopoints' own
fields (``jd``, ``fid``, ``magpsf``, ``sigmapsf``, ``magnr``, ``sigmagnr``, ``distnr``,
``isdiffpos``), which AMPEL keeps for the object's whole history, so that a star is
classified on every point AMPEL holds, not on one alert's 30 days.
"""

from typing import Literal

from ampel.abstract.AbsLightCurveT2Unit import AbsLightCurveT2Unit
from ampel.types import UBson
from ampel.view.LightCurve import LightCurve

from broker_filter.adapters import shared_classifier, summary
from broker_filter.api import from_ztf

ZTF_FIELDS = ("jd", "fid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "isdiffpos", "distnr")


class T2BrokerFilter(AbsLightCurveT2Unit):
    """Class probabilities, novelty p-value and flag of the object's light curve (broker-filter's bundle).

    ``bundle``: a bundle directory (None: the packaged default); ``novelty_threshold`` and
    ``min_points`` as the daemon's ``[scoring]`` keys; ``device`` as ``[inference] device``.
    """

    bundle: None | str = None
    novelty_threshold: Literal["p80", "p95"] = "p95"
    min_points: int = 20
    device: str = "cpu"

    def process(self, light_curve: LightCurve) -> UBson:
        points = [dp["body"] for dp in light_curve.get_photopoints() or ()]
        columns = {name: [body.get(name) for body in points] for name in ZTF_FIELDS}
        frame = from_ztf(columns["jd"], columns["fid"], columns["magpsf"], columns["sigmapsf"], columns["magnr"],
                         columns["sigmagnr"], columns["isdiffpos"], distnr=columns["distnr"],
                         object_id=str(light_curve.stock_id))
        classifier = shared_classifier(self.bundle, self.device, self.novelty_threshold, self.min_points)
        if frame.empty:  # an object with upper limits only
            return summary({"scored": False, "bundle_id": classifier.bundle_id})
        return summary(classifier.classify(frame).iloc[0])
