"""The figures the paper reports, computed from per-object outcomes.

Kept apart from the code that produces the outcomes (a network, a random forest, an
isolation forest) so that every method is measured by the same functions: a difference
between two rows of a table is then a difference between methods, never between two
implementations of "precision".

Conventions (they matter when comparing with Tsang & Schultz 2019):

- Classification figures are over the *known* classes only; novel objects never enter them.
- Novelty figures treat novel objects as positives and known-class objects as negatives.
  An object is flagged when its score (energy, or an isolation-forest anomaly score) is
  strictly above a threshold fitted on the training set (keys ``p80``, ``p95``).
- Precision is 0 when nothing is flagged (sklearn's ``zero_division=0``), never NaN, so
  that JSON reports stay valid and averaging over folds stays defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


class ClassFigures(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationMetrics(TypedDict):
    accuracy: float
    macro_f1: float
    n_objects: int
    per_class: dict[str, ClassFigures]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in ``class_names`` order


def classification_metrics(
    true_labels: Sequence[str], predicted_labels: Sequence[str], class_names: Sequence[str]
) -> ClassificationMetrics:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``true_labels`` must all be known classes: callers filter novel objects out first,
    because a novel object has no correct class to be scored against.
    """
    names = list(class_names)
    unknown = sorted(set(true_labels) - set(names))
    if unknown:
        raise ValueError(f"true labels outside the known classes: {unknown}")
    true = np.asarray(true_labels, dtype=object)
    predicted = np.asarray(predicted_labels, dtype=object)
    if true.shape != predicted.shape:
        raise ValueError(f"{true.shape[0]} true labels but {predicted.shape[0]} predictions")
    if true.size == 0:
        raise ValueError("no known-class objects to evaluate")
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=names, zero_division=0
    )
    per_class: dict[str, ClassFigures] = {
        name: ClassFigures(
            precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]), support=int(support[i])
        )
        for i, name in enumerate(names)
    }
    present = support > 0  # a class absent from this split would drag the macro mean to 0
    return ClassificationMetrics(
        accuracy=float(np.mean(true == predicted)),
        macro_f1=float(np.mean(f1[present])),
        n_objects=int(true.size),
        per_class=per_class,
        confusion=confusion_matrix(true, predicted, labels=names).tolist(),
    )


class NoveltyMetrics(TypedDict, total=False):
    precision_p80: float
    recall_p80: float
    f1_p80: float
    precision_p95: float
    recall_p95: float
    f1_p95: float
    auroc: float
    n_known: int
    n_novel: int


def novelty_metrics(
    known_scores: np.ndarray, novel_scores: np.ndarray, thresholds: Mapping[str, float]
) -> NoveltyMetrics:
    """Precision, recall and F1 of the flag at each threshold, and the threshold-free AUROC.

    Higher score = more anomalous. ``thresholds`` maps a name (``"p80"``) to the score
    above which an object is flagged; every name yields ``precision_<name>`` etc.
    """
    known = np.asarray(known_scores, dtype=np.float64)
    novel = np.asarray(novel_scores, dtype=np.float64)
    if known.size == 0 or novel.size == 0:
        raise ValueError(f"novelty needs both known ({known.size}) and novel ({novel.size}) objects")
    for name, values in (("known", known), ("novel", novel)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"non-finite {name} novelty scores: {int(np.sum(~np.isfinite(values)))}")
    result = NoveltyMetrics(n_known=int(known.size), n_novel=int(novel.size))
    for name, threshold in thresholds.items():
        true_positives = int(np.sum(novel > threshold))
        false_positives = int(np.sum(known > threshold))
        flagged = true_positives + false_positives
        precision = true_positives / flagged if flagged else 0.0
        recall = true_positives / novel.size
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[f"precision_{name}"] = float(precision)  # type: ignore[literal-required]
        result[f"recall_{name}"] = float(recall)  # type: ignore[literal-required]
        result[f"f1_{name}"] = float(f1)  # type: ignore[literal-required]
    labels = np.concatenate([np.zeros(known.size), np.ones(novel.size)])
    result["auroc"] = float(roc_auc_score(labels, np.concatenate([known, novel])))
    return result


def percentile_thresholds(training_scores: np.ndarray, percentiles: Mapping[str, float]) -> dict[str, float]:
    """Thresholds at percentiles of training scores: how the paper sets the energy cut."""
    scores = np.asarray(training_scores, dtype=np.float64)
    return {name: float(np.percentile(scores, q)) for name, q in percentiles.items()}


PAPER_PERCENTILES: dict[str, float] = {"p80": 80.0, "p95": 95.0}


def combine_by_owner(values: np.ndarray, owner: np.ndarray, n_owners: int) -> np.ndarray:
    """Mean of per-row values (rows = chunks or bands) for each owner (an object).

    ``values`` is (rows,) or (rows, k); an owner with no rows gets NaN, which callers must
    not hide: it means an object produced nothing to score.
    """
    values = np.asarray(values, dtype=np.float64)
    owner = np.asarray(owner, dtype=np.int64)
    counts = np.bincount(owner, minlength=n_owners).astype(np.float64)
    flat = values.reshape(values.shape[0], -1)
    sums = np.zeros((n_owners, flat.shape[1]))
    np.add.at(sums, owner, flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means.reshape((n_owners,) + values.shape[1:])
