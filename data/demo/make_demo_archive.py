"""Rebuild ``data/demo/ztf-variables/`` (Avro container files + ``labels.csv``) from ``data/lightcurves``.

One real star per class, the one with the most observations in its first WINDOW_DAYS:
the eight classes the model knows (SR, M, RRAB, RRCD, ECL, CEPH, DSCT, ROT, through their
ASAS-3 / Stripe 82 survey classes) and two it was never trained on (RCB, Beta_Cephei).
The window keeps the archive small and its replay quick on a CPU. The stars' photometry
becomes ZTF 4.02 alerts with ``broker_filter.streams.simulate`` (V -> g), one alert per detection with 30
days of history; the container files are then re-written with the deflate codec (7x smaller).

    python data/demo/make_demo_archive.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import fastavro
import pandas as pd

from broker_filter.streams.simulate import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent
LIGHTCURVES = HERE.parent / "lightcurves"
WINDOW_DAYS = 200.0
SURVEY_CLASSES = (
    "Semireg_PV", "Mira", "RR_Lyrae_FM", "RR_Lyrae_FO", "W_Ursae_Maj",
    "Classical_Cepheid", "Delta_Scuti", "RS_CVn", "RCB", "Beta_Cephei",
)  # fmt: skip


def main() -> None:
    observations = pd.read_parquet(LIGHTCURVES / "lightcurves.parquet")
    objects = pd.read_csv(LIGHTCURVES / "objects.csv", dtype={"object_id": str})
    observations = observations[observations["band"] == "V"]
    start = observations.groupby("object_id")["time"].transform("min")
    window = observations[observations["time"] < start + WINDOW_DAYS]
    counts = window.groupby("object_id").size().rename("n").reset_index().merge(objects, on="object_id")
    chosen = [counts[counts["survey_class"] == c].sort_values(["n", "object_id"]).iloc[-1]["object_id"] for c in SURVEY_CLASSES]
    out = HERE / "ztf-variables"
    with tempfile.TemporaryDirectory() as tmp:
        window[window["object_id"].isin(chosen)].to_parquet(Path(tmp) / "lightcurves.parquet")
        objects[objects["object_id"].isin(chosen)].to_csv(Path(tmp) / "objects.csv", index=False)
        summary = simulate(tmp, out, SimulationConfig(survey="ztf"))
    for path in sorted(out.glob("*.avro")):
        deflate(path)
    print(f"{summary.alerts} alerts of {summary.objects} stars -> {summary.archive}, labels {summary.labels}")


def deflate(path: Path) -> None:
    """Re-write an Avro container file with the deflate codec (same schema, same records)."""
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        schema, records = reader.writer_schema, list(reader)
    with path.open("wb") as handle:
        fastavro.writer(handle, schema, records, codec="deflate", codec_compression_level=9)


if __name__ == "__main__":
    main()
