"""broker-filter as a Fink science module: a Spark pandas UDF over the alert's history columns.

Fink's science modules are pandas UDFs whose arguments are the alert's ``c*`` columns: for
each alert, arrays of one field over its ``prv_candidates`` and its candidate (``cjd``,
``cfid``, ``cmagpsf``, ``csigmapsf``, ``cmagnr``, ``csigmagnr``, ``cisdiffpos``). Each alert is
classified on the points it carries (ZTF: 30 days of history), with the decoder's apparent
magnitudes (:func:`broker_filter.from_ztf`). :func:`classify_alerts` is the module's body on
pandas Series (testable without Spark); :func:`spark_udf` wraps it for Spark.

    from broker_filter.adapters.fink import FINK_COLUMNS, spark_udf
    df = df.withColumn("broker_filter", spark_udf()(*FINK_COLUMNS))
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from broker_filter.adapters import shared_classifier, summary
from broker_filter.api import Classifier, from_ztf

#: The alert columns the module reads, in the UDF's argument order (Fink's names).
FINK_COLUMNS = ("cjd", "cfid", "cmagpsf", "csigmapsf", "cmagnr", "csigmagnr", "cisdiffpos")
#: What it adds per alert (a Spark struct column); empty for an alert it cannot score.
OUTPUT_FIELDS = {"top_class": "string", "probability": "double", "energy": "double", "novelty_p_value": "double",
                 "novel": "boolean", "n_points": "int", "bundle_id": "string"}


def classify_alerts(cjd: pd.Series, cfid: pd.Series, cmagpsf: pd.Series, csigmapsf: pd.Series, cmagnr: pd.Series,
                    csigmagnr: pd.Series, cisdiffpos: pd.Series, *, classifier: Classifier | None = None) -> pd.DataFrame:
    """One row of :data:`OUTPUT_FIELDS` per alert (same index as the inputs), each alert classified on its own history."""
    classifier = classifier or shared_classifier()
    histories = [_values(column) for column in (cjd, cfid, cmagpsf, csigmapsf, cmagnr, csigmagnr, cisdiffpos)]
    lengths = [len(points) for points in histories[0]]
    alert_ids = np.repeat(np.arange(len(lengths)).astype(str), lengths)
    flat = [list(itertools.chain.from_iterable(column)) for column in histories]
    table = classifier.classify(from_ztf(*flat, object_id=list(alert_ids))).set_index("object_id") if alert_ids.size else None
    rows = []
    for i in range(len(lengths)):
        row = summary(table.loc[str(i)]) if table is not None and str(i) in table.index else None
        scored = row is not None and row["scored"]
        rows.append({field: row[field] if scored else None for field in OUTPUT_FIELDS})
    return pd.DataFrame(rows, columns=list(OUTPUT_FIELDS), index=cjd.index).astype(_PANDAS_TYPES)


_PANDAS_TYPES = {"top_class": "string", "probability": "Float64", "energy": "Float64", "novelty_p_value": "Float64",
                 "novel": "boolean", "n_points": "Int32", "bundle_id": "string"}  # nullable: an unscored alert is all nulls


def _values(column: pd.Series) -> list[Sequence]:
    """Each alert's array of one field (None, a missing history, as empty)."""
    return [[] if value is None else list(value) for value in column]


def spark_udf(bundle: str | None = None, device: str = "cpu"):
    """The science module as a Spark pandas UDF returning a struct of :data:`OUTPUT_FIELDS`.

    Each executor loads the bundle once (:func:`broker_filter.adapters.shared_classifier`).
    """
    from pyspark.sql.functions import pandas_udf

    schema = ", ".join(f"{name} {kind}" for name, kind in OUTPUT_FIELDS.items())

    @pandas_udf(schema)
    def broker_filter_classification(cjd: pd.Series, cfid: pd.Series, cmagpsf: pd.Series, csigmapsf: pd.Series,
                                     cmagnr: pd.Series, csigmagnr: pd.Series, cisdiffpos: pd.Series) -> pd.DataFrame:
        return classify_alerts(cjd, cfid, cmagpsf, csigmapsf, cmagnr, csigmagnr, cisdiffpos,
                               classifier=shared_classifier(bundle, device))

    return broker_filter_classification
