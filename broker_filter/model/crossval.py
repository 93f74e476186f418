"""Stratified k-fold cross-validation of a training recipe, with the baselines on every fold.

Folds are of *objects* (never chunks: two chunks of one star on both sides would flatter
every figure), stratified by model class so that the small classes (ROT 14 stars, DSCT
25) reach every fold. Each fold trains a fresh network with :func:`broker_filter.model.train.train`
(which keeps its own stratified validation split of the training folds for early
stopping), then :func:`broker_filter.model.evaluate.evaluate_split` scores the held-out fold and every
novel object (novel classes are never trained on, so every fold may test all of them).

Periods are estimated once for all light curves and shared by all folds: the estimate of
a light curve does not depend on the fold, and it is the costliest step on a CPU.

Folds can run in parallel processes (``jobs``): one RNN of this size leaves most of a GPU
idle, so five trainings side by side on one GPU take little longer than one. Each fold's
result is written to ``OUT/folds/fold_<k>.json`` as soon as it is done (its bundle to
``OUT/folds/bundle_<k>``, and with ``save_predictions`` its per-object outputs to
``OUT/folds/predictions_<k>.parquet``, :mod:`broker_filter.model.predictions`), and a fold whose
file exists is not run again (``resume``): a run cut short loses only the folds in flight.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import LightCurve
from broker_filter.model.evaluate import N_POINTS_GRID, EvalObject, evaluate_split, group_objects, periods_of, split_objects
from broker_filter.model.progress import progress_bar
from broker_filter.model.train import TrainConfig, train

log = logging.getLogger(__name__)

FOLDS_DIR = "folds"


@dataclass(frozen=True)
class CrossValidation:
    """What to cross-validate: a training recipe on light curves, in ``folds`` folds."""

    config: TrainConfig
    mapping: ClassMapping
    folds: int = 5
    seed: int = 0
    jobs: int = 1
    device: str = "auto"
    resume: bool = False
    n_points_grid: tuple[int, ...] = N_POINTS_GRID
    save_predictions: bool = False


def fold_assignment(objects: Sequence[EvalObject], folds: int, seed: int) -> dict[str, int]:
    """object_id -> test fold, stratified by model class, for the known objects."""
    known = [obj for obj in objects if obj.label is not None]
    labels = [obj.label for obj in known]
    smallest = min(labels.count(label) for label in set(labels))
    if smallest < folds:
        raise ValueError(f"a class has only {smallest} objects, fewer than the {folds} folds")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    for fold, (_, test_index) in enumerate(splitter.split(np.zeros(len(known)), labels)):
        assignment.update({known[i].object_id: fold for i in test_index})
    return assignment


def run_crossval(
    plan: CrossValidation,
    lcs: Sequence[LightCurve],
    out_dir: str | Path,
    known_periods: Mapping[tuple[str, str], float] | None = None,
) -> list[dict]:
    """Train and evaluate every fold; returns the fold results (JSON-able dicts) in fold order.

    ``known_periods`` {(object_id, band): days} (e.g. ``data/lightcurves/periods.csv``) are
    used as they are; the other curves' periods are estimated here, once.
    """
    out_dir = Path(out_dir)
    (out_dir / FOLDS_DIR).mkdir(parents=True, exist_ok=True)
    preprocess = plan.config.preprocess()
    objects = group_objects(lcs, plan.mapping, preprocess.bands)
    assignment = fold_assignment(objects, plan.folds, plan.seed)
    todo = [k for k in range(plan.folds) if not (plan.resume and _fold_path(out_dir, k).is_file())]
    curves = [curve for obj in objects for curve in obj.curves] if todo else []
    log.info("cross-validation: %d folds to run (%d kept from an earlier run); periods of %d light curves first",
             len(todo), plan.folds - len(todo), len(curves))
    estimated = periods_of(curves, preprocess, known_periods or {}) if curves else []
    periods = {(c.object_id, c.band): float(p) for c, p in zip(curves, estimated)}
    tasks = [(plan, objects, assignment, periods, k, str(out_dir)) for k in todo]
    with progress_bar(total=len(tasks), desc="cross-validation", unit="fold") as bar:
        if plan.jobs > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=min(plan.jobs, len(tasks)), mp_context=get_context("spawn")) as pool:
                for _ in pool.map(_run_fold, tasks):
                    bar.update(1)
        else:
            for task in tasks:
                _run_fold(task)
                bar.update(1)
    return [json.loads(_fold_path(out_dir, k).read_text()) for k in range(plan.folds)]


def _fold_path(out_dir: Path, fold: int) -> Path:
    return out_dir / FOLDS_DIR / f"fold_{fold}.json"


def _run_fold(task) -> None:
    """One fold, in this process or a worker: train, evaluate, write its JSON."""
    plan, objects, assignment, periods, fold, out_dir = task
    import torch

    started = time.monotonic()

    if plan.jobs > 1:  # share the CPU cores between the parallel folds
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.jobs))
    split = split_objects(objects, {oid for oid, k in assignment.items() if k == fold})
    # The recipe's own seed shifts the training seeds and leaves the folds alone: seed
    # ensembles and seed spreads are measured on the same objects.
    config = replace(plan.config, seed=plan.config.seed + plan.seed + fold, device=plan.device, quiet=True)
    bundle_dir = Path(out_dir) / FOLDS_DIR / f"bundle_{fold}"
    train_curves = [curve for obj in split.train for curve in obj.curves]
    bundle = train(config, train_curves, bundle_dir, mapping=plan.mapping, periods=periods)
    result = evaluate_split(bundle, split, device=plan.device, periods=periods, seed=plan.seed + fold,
                            n_points_grid=plan.n_points_grid)
    if plan.save_predictions:
        from broker_filter.model.predictions import prediction_table, write_predictions

        write_predictions(prediction_table(bundle, split, plan.device, periods),
                          Path(out_dir) / FOLDS_DIR / f"predictions_{fold}.parquet", bundle.class_names)
    result["fold"] = fold
    result["bundle_id"] = bundle.bundle_id
    result["train_seconds"] = bundle.metrics.get("train_seconds")
    result["training_phases"] = bundle.metrics.get("phases")
    path = _fold_path(Path(out_dir), fold)
    path.with_suffix(".tmp").write_text(json.dumps(result))
    path.with_suffix(".tmp").replace(path)
    log.info("fold %d of %d: accuracy %.3f, macro F1 %.3f (%.0f s)", fold + 1, plan.folds, result.get("accuracy", float("nan")),
             result.get("macro_f1", float("nan")), time.monotonic() - started)


# ---------------------------------------------------------------------------------------
# Aggregation over folds
# ---------------------------------------------------------------------------------------

#: Keys of a fold result that are per-fold records, not figures to average.
_NOT_AVERAGED = {"fold", "bundle_id", "energies", "confusion", "training_phases", "thresholds", "counts", "set"}


def aggregate(folds: Sequence[Mapping]) -> dict:
    """Mean over folds of every figure, ``std`` beside it, the confusion matrices summed.

    The result has the same keys as one fold's (so one report writer serves both), plus
    ``cv`` with the fold count, the standard deviations and the per-fold headline figures.
    """
    mean = _average([{k: v for k, v in fold.items() if k not in _NOT_AVERAGED} for fold in folds], np.mean)
    std = _average([{k: v for k, v in fold.items() if k not in _NOT_AVERAGED} for fold in folds], np.std)
    matrices = np.sum([fold["confusion"]["matrix"] for fold in folds], axis=0)
    mean["confusion"] = {"classes": folds[0]["confusion"]["classes"], "matrix": matrices.tolist()}
    mean["novelty"]["set"] = folds[0]["novelty"]["set"]
    mean["energies"] = folds[0]["energies"]
    mean["thresholds"] = folds[0]["thresholds"]
    mean["counts"] = _sum_counts([fold["counts"] for fold in folds])
    for name, row in mean["per_class"].items():  # supports add up to the whole data set
        row["support"] = sum(fold["per_class"][name]["support"] for fold in folds)
    for n, row in mean["accuracy_by_n_points"].items():
        for key in ("objects", "scored"):
            row[key] = sum(fold["accuracy_by_n_points"][n][key] for fold in folds)
    mean["cv"] = {
        "folds": len(folds),
        "std": std,
        "per_fold": [
            {"fold": f["fold"], "accuracy": f["accuracy"], "auroc": f["novelty"]["auroc"],
             "train_seconds": f.get("train_seconds"), "bundle_id": f.get("bundle_id")}
            for f in folds
        ],
        "energies_from_fold": folds[0]["fold"],
    }
    return mean


def _average(values: Sequence, reduce):
    """Element-wise reduce of nested dicts of numbers (None where any fold lacks a value)."""
    first = values[0]
    if isinstance(first, Mapping):
        keys = [k for k in first if all(isinstance(v, Mapping) and k in v for v in values)]
        return {k: _average([v[k] for v in values], reduce) for k in keys}
    if isinstance(first, bool) or not isinstance(first, (int, float)) or any(v is None for v in values):
        return None if isinstance(first, (int, float)) or first is None else first
    return float(reduce(np.asarray(values, dtype=np.float64)))


def _sum_counts(counts: Sequence[Mapping]) -> dict:
    """Mean counts per fold, except the test objects and chunks, which add up to the whole set."""
    total = _average(list(counts), np.mean)
    for key in ("test_objects", "test_chunks"):
        total[key] = sum(c[key] for c in counts)
    total["unscored"]["test"] = sum(c["unscored"]["test"] for c in counts)
    return total
