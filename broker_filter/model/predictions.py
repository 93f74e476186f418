"""Per-object outputs of an evaluation as one table, for the analyses a report does not make.

The report (:mod:`broker_filter.model.evaluate`) gives figures; a user judging a bundle, or
a developer trying a new novelty score or an ensemble of several bundles, needs the
network's outputs themselves, object by object, on the same split. One row per object
and cut: the whole curve (``cut`` 0) and the stream prefixes of the calibration (the
first 20, 25, ... detections, all bands in time order) of every training, test and novel
object. Columns: ``object_id``, ``group`` (train, test, novel), ``cut``, ``label`` (known
class or null), ``novelty_set`` (or null), ``source``, ``n_points``, ``n_chunks``,
``energy`` (length-weighted mean chunk energy), ``log_probs`` (combined, before any
temperature, in ``class_names`` order) and ``z`` (length-weighted mean estimation-network
input). Written as Parquet (``broker-filter evaluate --save-predictions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from broker_filter.model.bundle import ModelBundle
from broker_filter.model.calibration import CALIBRATION_PREFIXES
from broker_filter.model.evaluate import EvalObject, Split, combine_objects, network_chunk_outputs
from broker_filter.model.lightcurve import first_detections


def prediction_table(
    bundle: ModelBundle,
    split: Split,
    device,
    periods: Mapping[tuple[str, str], float] | None = None,
    cuts: Sequence[int] = CALIBRATION_PREFIXES,
) -> pa.Table:
    """Every object of ``split``, whole (periods from ``periods`` where known) and cut to each of ``cuts``."""
    parts = []
    for group, objects in (("train", split.train), ("test", split.test), ("novel", split.novel)):
        parts.append(_rows(bundle, objects, group, 0, device, periods))
        for n in cuts:
            cut = [EvalObject(o.object_id, first_detections(o.curves, n), o.label, o.novelty_set)
                   for o in objects if o.n_points > n]
            if cut:
                parts.append(_rows(bundle, cut, group, n, device, None))
    return pa.concat_tables(parts)


def write_predictions(table: pa.Table, path: str | Path, class_names: Sequence[str]) -> Path:
    """Parquet with the class order in its metadata (``class_names``, comma-separated)."""
    path = Path(path)
    schema = table.schema.with_metadata({"class_names": ",".join(class_names)})
    pq.write_table(table.cast(schema), path)
    return path


def _rows(bundle: ModelBundle, objects: Sequence[EvalObject], group: str, cut: int, device, periods) -> pa.Table:
    chunks = network_chunk_outputs(bundle, objects, device, periods)
    combined = combine_objects(chunks)
    weight = chunks.lengths.astype(np.float64)
    z_sum = np.zeros((len(objects), chunks.z.shape[1]))
    np.add.at(z_sum, chunks.owner, chunks.z * weight[:, None])
    z = z_sum[combined.index] / combined.n_points[:, None]
    scored = [objects[i] for i in combined.index]
    n_chunks = np.bincount(chunks.owner, minlength=len(objects))[combined.index]
    return pa.table({
        "object_id": pa.array([o.object_id for o in scored], pa.string()),
        "group": pa.array([group] * len(scored), pa.string()),
        "cut": pa.array(np.full(len(scored), cut, dtype=np.int32)),
        "label": pa.array([o.label for o in scored], pa.string()),
        "novelty_set": pa.array([o.novelty_set for o in scored], pa.string()),
        "source": pa.array([o.curves[0].source for o in scored], pa.string()),
        "n_points": pa.array(combined.n_points.astype(np.int64)),
        "n_chunks": pa.array(n_chunks.astype(np.int64)),
        "energy": pa.array(combined.energy.astype(np.float64)),
        "log_probs": pa.array(list(combined.log_probs.astype(np.float64)), pa.list_(pa.float64())),
        "z": pa.array(list(z), pa.list_(pa.float64())),
    })
