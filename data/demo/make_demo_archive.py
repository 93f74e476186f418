"""Rebuild ``data/demo/ztf-variables/`` (Avro container files + ``labels.csv``) from ``data/lightcurves``.

Real stars the default bundle never trained on: the held-out part of ``broker-filter split``
(fraction 0.15, seed 0; the bundle was trained on the other part, which this script checks
through the bundle's data digest). Up to PER_CLASS stars of each class the model knows (SR,
M, RRAB, RRCD, ECL, CEPH, DSCT, ROT, through their ASAS-3 survey classes), the ones with
the most V observations in their first WINDOW_DAYS, and two stars of classes it was never
trained on (RCB, Beta_Cephei).
The window keeps the archive small and its replay quick on a CPU. The stars' photometry
becomes ZTF 4.02 alerts with ``broker_filter.streams.simulate`` (V -> g), one alert per detection with 30
days of history; the container files are then re-written with the deflate codec (7x smaller).

    python data/demo/make_demo_archive.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import fastavro
import pandas as pd

from broker_filter.model.bundle import ModelBundle
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import load_lightcurve_table, split_lightcurve_table
from broker_filter.model.evaluate import held_out_split
from broker_filter.streams.simulate import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent
LIGHTCURVES = HERE.parent / "lightcurves"
WINDOW_DAYS = 200.0
PER_CLASS = 2
UNSEEN_CLASSES = ("RCB", "Beta_Cephei")


def main() -> None:
    mapping = ClassMapping()
    with tempfile.TemporaryDirectory() as parts:
        split_lightcurve_table(LIGHTCURVES, parts, mapping, fraction=0.15, seed=0)
        _, trained_on_train_part = held_out_split(ModelBundle.load(), load_lightcurve_table(Path(parts) / "train"))
        if not trained_on_train_part:
            raise SystemExit("the default bundle was not trained on the train part of this split: its held-out stars are unknown")
        held_out = set(pd.read_csv(Path(parts) / "external" / "objects.csv", dtype={"object_id": str})["object_id"])
    observations = pd.read_parquet(LIGHTCURVES / "lightcurves.parquet")
    objects = pd.read_csv(LIGHTCURVES / "objects.csv", dtype={"object_id": str})
    objects = objects[objects["object_id"].isin(held_out) & (objects["source"] == "asas3_richards2012")]
    observations = observations[(observations["band"] == "V") & observations["object_id"].isin(set(objects["object_id"]))]
    start = observations.groupby("object_id")["time"].transform("min")
    window = observations[observations["time"] < start + WINDOW_DAYS]
    counts = window.groupby("object_id").size().rename("n").reset_index().merge(objects, on="object_id")
    counts["group"] = counts["survey_class"].map(lambda c: mapping.label_of(c) or c)
    chosen = []
    for group in [*mapping.known, *UNSEEN_CLASSES]:
        ranked = counts[counts["group"] == group].sort_values(["n", "object_id"], ascending=False)
        chosen += list(ranked["object_id"][: PER_CLASS if group in mapping.known else 1])
    out = HERE / "ztf-variables"
    shutil.rmtree(out, ignore_errors=True)
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
