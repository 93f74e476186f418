"""broker-filter inside other brokers: a Fink science module, an AMPEL T2 unit, a Lasair annotator.

Each adapter is a thin shape around :class:`broker_filter.Classifier` (the library API), in
the host broker's own interface; each imports its host's libraries only when used (``pyspark``
for Fink, ``ampel-interface`` and ``ampel-photometry`` for AMPEL, none for Lasair), so that
``import broker_filter`` needs none of them. docs/BROKERS.md says what each needs.
"""

from __future__ import annotations

import functools

import pandas as pd

from broker_filter.api import Classifier


@functools.lru_cache(maxsize=8)
def shared_classifier(bundle: str | None = None, device: str = "cpu", novelty_threshold: str = "p95",
                      min_points: int = 20) -> Classifier:
    """One loaded classifier per process and settings: Spark executors and AMPEL workers call
    the adapter once per alert or batch, and loading a bundle costs a second."""
    return Classifier.load(bundle, device=device, novelty_threshold=novelty_threshold, min_points=min_points)


def summary(row) -> dict:
    """One row of :meth:`Classifier.classify` as plain JSON-able values: what every adapter publishes."""
    if not row["scored"]:
        return {"scored": False, "top_class": None, "probability": None, "probabilities": None, "energy": None,
                "novelty_p_value": None, "novel": None, "n_points": 0, "bands_used": [], "bundle_id": row["bundle_id"]}
    classes = [name.removeprefix("prob_") for name in row.index if name.startswith("prob_")]
    return {
        "scored": True,
        "top_class": row["top_class"],
        "probability": float(row[f"prob_{row['top_class']}"]),
        "probabilities": {name: float(row[f"prob_{name}"]) for name in classes},
        "energy": float(row["energy"]),
        "novelty_p_value": None if pd.isna(row["novelty_p_value"]) else float(row["novelty_p_value"]),  # an uncalibrated bundle has none
        "novel": bool(row["novel"]),
        "n_points": int(row["n_points"]),
        "bands_used": list(row["bands_used"]),
        "bundle_id": row["bundle_id"],
    }
