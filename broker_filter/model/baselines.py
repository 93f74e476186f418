"""The baselines the network must beat, fitted on the same training objects.

- A random forest on the network's own estimation-network inputs (embedding +
  reconstruction features + supports): the paper's comparison (its RF scored 0.9105).
- A random forest on standard light-curve features from the ``light-curve`` package
  (Malanchev et al. 2021), the kind of feature set brokers such as ALeRCE and SNAD use.
- An isolation forest for novelty, on each of those two feature sets.

Every baseline works on rows (a chunk, or one band of an object) that belong to objects;
row results are averaged per object exactly as the network's chunk results are, so that
per-object figures compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest, RandomForestClassifier

from broker_filter.model.metrics import combine_by_owner

N_TREES = 500
MIN_POINTS_FOR_FEATURES = 3


@dataclass(frozen=True)
class FeatureRows:
    """Feature vectors of rows, and which object each row belongs to.

    ``owner[i]`` indexes ``object_ids``; ``labels`` holds one label per object (a known
    class name, or the name of a novelty set for novel objects).
    """

    features: np.ndarray  # (rows, d) float
    owner: np.ndarray  # (rows,) int
    object_ids: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] != self.owner.shape[0]:
            raise ValueError(f"features {self.features.shape} do not match owner {self.owner.shape}")
        if len(self.object_ids) != len(self.labels):
            raise ValueError(f"{len(self.object_ids)} objects but {len(self.labels)} labels")

    @property
    def row_labels(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.owner]


def _finite(features: np.ndarray) -> np.ndarray:
    """Trees cannot take NaN/inf (a feature undefined on a short curve): use 0 and keep the row."""
    return np.nan_to_num(np.asarray(features, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def fit_random_forest(train: FeatureRows, seed: int) -> RandomForestClassifier:
    """A balanced random forest: the small classes (ROT 14 stars) would otherwise vanish."""
    forest = RandomForestClassifier(
        n_estimators=N_TREES, class_weight="balanced", n_jobs=-1, random_state=seed
    )
    forest.fit(_finite(train.features), train.row_labels)
    return forest


def forest_object_probabilities(
    forest: RandomForestClassifier, rows: FeatureRows, class_names: Sequence[str]
) -> np.ndarray:
    """(objects, classes) probabilities in ``class_names`` order: the mean over each object's rows."""
    row_probs = forest.predict_proba(_finite(rows.features))
    order = [list(forest.classes_).index(name) if name in forest.classes_ else -1 for name in class_names]
    aligned = np.zeros((row_probs.shape[0], len(class_names)))
    for column, source in enumerate(order):
        if source >= 0:
            aligned[:, column] = row_probs[:, source]
    return combine_by_owner(aligned, rows.owner, len(rows.object_ids))


def forest_row_predictions(
    forest: RandomForestClassifier, rows: FeatureRows
) -> np.ndarray:
    """Per-row predicted class names, for the paper's per-chunk accuracy."""
    return forest.predict(_finite(rows.features))


def fit_isolation_forest(train: FeatureRows, seed: int) -> IsolationForest:
    """Fitted on known-class training rows only, as the energy's GMM is."""
    forest = IsolationForest(n_estimators=N_TREES, n_jobs=-1, random_state=seed)
    forest.fit(_finite(train.features))
    return forest


def isolation_object_scores(forest: IsolationForest, rows: FeatureRows) -> np.ndarray:
    """Per-object anomaly score, higher = more anomalous (the sign of the energy)."""
    row_scores = -forest.score_samples(_finite(rows.features))
    return combine_by_owner(row_scores, rows.owner, len(rows.object_ids))


def lightcurve_feature_extractor():
    """The standard feature set: magnitude statistics, variability indices, a periodogram.

    Survey-revealing features (number of points, time span) are left out: in this data
    they would name the survey, and through it the class, without looking at the shape.
    """
    import light_curve as lc  # imported here: only the baselines need the Rust extension

    return lc.Extractor(
        lc.Amplitude(),
        lc.AndersonDarlingNormal(),
        lc.BeyondNStd(1.0),
        lc.Cusum(),
        lc.Eta(),
        lc.EtaE(),
        lc.ExcessVariance(),
        lc.InterPercentileRange(0.1),
        lc.Kurtosis(),
        lc.LinearTrend(),
        lc.MagnitudePercentageRatio(),
        lc.MaximumSlope(),
        lc.Mean(),
        lc.Median(),
        lc.MedianAbsoluteDeviation(),
        lc.MedianBufferRangePercentage(0.1),
        lc.PercentAmplitude(),
        lc.PercentDifferenceMagnitudePercentile(0.1),
        lc.ReducedChi2(),
        lc.Skew(),
        lc.StandardDeviation(),
        lc.StetsonK(),
        lc.WeightedMean(),
        lc.Periodogram(peaks=1),
    )


def lightcurve_features(
    curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[str]]:
    """(curves, features) array for (time, mag, mag_err) triples, and the feature names.

    Features undefined on a curve (too few points) come back NaN rather than raising, so
    that one short band does not drop its object; the forests see them as 0.
    """
    extractor = lightcurve_feature_extractor()
    prepared = [
        (
            np.ascontiguousarray(t, dtype=np.float64),
            np.ascontiguousarray(m, dtype=np.float64),
            np.ascontiguousarray(e, dtype=np.float64),
        )
        for t, m, e in curves
    ]
    values = np.stack([_extract_one(extractor, curve) for curve in prepared]) if prepared else np.empty(
        (0, len(extractor.names))
    )
    return values, list(extractor.names)


def _extract_one(extractor, curve: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    time, mag, err = curve
    usable = np.isfinite(time) & np.isfinite(mag) & np.isfinite(err) & (err > 0)
    time, mag, err = time[usable], mag[usable], err[usable]
    time, unique = np.unique(time, return_index=True)  # the periodogram needs strictly rising times
    if time.size < MIN_POINTS_FOR_FEATURES:  # the periodogram panics (not raises) below this
        return np.full(len(extractor.names), np.nan)
    return extractor(time, mag[unique], err[unique], fill_value=np.nan, sorted=True)
