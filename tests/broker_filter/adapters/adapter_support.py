"""Real ZTF alerts as the host brokers hold them: Fink's history columns and AMPEL's datapoints."""

from __future__ import annotations

import glob
from pathlib import Path

import fastavro

REPO = Path(__file__).resolve().parents[3]
FIELDS = ("jd", "fid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "isdiffpos", "distnr", "candid")


def real_alerts() -> list[dict]:
    """Every alert of data/alerts/ztf (real, from ZTF and Fink) and data/demo (real ASAS-3 photometry as ZTF 4.02 alerts)."""
    alerts = []
    for path in sorted(glob.glob(str(REPO / "data/alerts/ztf/*.avro"))) + sorted(glob.glob(str(REPO / "data/demo/ztf-variables/*.avro"))):
        with open(path, "rb") as handle:
            alerts.extend(fastavro.reader(handle))
    return alerts


def points(alert: dict) -> list[dict]:
    """The alert's history then its candidate, each with the ZTF fields the classifier reads (Fink's c* order)."""
    return [{name: point.get(name) for name in FIELDS} for point in [*(alert.get("prv_candidates") or []), alert["candidate"]]]
