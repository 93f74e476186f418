"""Evaluation as Tsang & Schultz (2019) report it, with the baselines, on one split.

One split is: training objects (known classes; what the bundle was fitted on, and what
the baselines are fitted on), test objects (held-out known classes) and novel objects
(never trained on). :func:`evaluate_split` scores them all and returns one JSON-able
dict; :mod:`broker_filter.model.crossval` calls it once per fold, ``broker-filter evaluate`` once on a
bundle's own held-out split; :mod:`broker_filter.model.report` writes the files.

What is counted, and how:

- ``accuracy``: per object, over the known test objects; an object's chunks (all its
  bands, all its 200-point pieces) are combined by :func:`broker_filter.model.scores.combine_chunks`,
  exactly as the daemon combines them. ``accuracy_per_chunk`` counts chunks, as the
  paper does (it classified 200-point chunks).
- ``novelty``: novel objects are positives, known test objects negatives; flagged when
  the object's energy exceeds the bundle's thresholds (percentiles of training
  energies). One block per novelty set (the paper's ASAS 'VAR'-like classes, ZTF SN Ia).
- ``accuracy_by_n_points``: each test object truncated to its first n detections (all
  bands merged in time order, as an alert stream delivers them) and re-scored, periods
  re-estimated: how the classification matures while a star is being observed.
- Objects with no chunk (fewer than ``n_min`` points in every accepted band) cannot be
  scored by the network; they are counted (``unscored``) and left out of every method's
  figures, so that all rows of a table are measured on the same objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from broker_filter.model import baselines
from broker_filter.model.bundle import ModelBundle, resolve_device
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import LightCurve, lightcurves_digest
from broker_filter.model.features import PreprocessConfig, prepare_batch, resolve_periods
from broker_filter.model.gmm import energy
from broker_filter.model.metrics import (
    PAPER_PERCENTILES,
    classification_metrics,
    novelty_metrics,
    percentile_thresholds,
)
from broker_filter.model.scores import combine_chunks

#: Truncation points for ``accuracy_by_n_points`` (detections since the first one).
N_POINTS_GRID = (20, 30, 50, 100, 200, 500)
#: Chunks per forward pass when scoring.
SCORING_BATCH = 2048


class EvaluationError(ValueError):
    """An evaluation that cannot be run as asked (no test objects, no novel objects...)."""


@dataclass(frozen=True)
class EvalObject:
    """One object: its light curves in the bundle's bands, its model class or novelty set."""

    object_id: str
    curves: tuple[LightCurve, ...]
    label: str | None  # known model class, None for novel objects
    novelty_set: str | None  # e.g. "VAR", "SNIa"; None for known objects

    @property
    def n_points(self) -> int:
        return sum(len(curve) for curve in self.curves)


def group_objects(lcs: Sequence[LightCurve], mapping: ClassMapping, bands: Sequence[str] | None) -> list[EvalObject]:
    """Light curves -> objects (sorted by id), keeping accepted bands and mapped classes only.

    Survey classes neither known nor novel are dropped: they have no right answer.
    """
    by_object: dict[str, list[LightCurve]] = {}
    for lc in lcs:
        if bands is None or lc.band in bands:
            by_object.setdefault(lc.object_id, []).append(lc)
    objects = []
    for object_id in sorted(by_object):
        curves = tuple(by_object[object_id])
        survey_class = curves[0].label
        label, novelty_set = mapping.label_of(survey_class), mapping.novelty_set_of(survey_class)
        if label is not None or novelty_set is not None:
            objects.append(EvalObject(object_id, curves, label, novelty_set))
    return objects


# ---------------------------------------------------------------------------------------
# The network's outputs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkOutputs:
    """Per chunk: estimation-network input ``z``, log-probabilities, energy, length, and its object."""

    z: np.ndarray  # (N, E+5)
    log_probs: np.ndarray  # (N, K)
    energy: np.ndarray  # (N,)
    lengths: np.ndarray  # (N,)
    owner: np.ndarray  # (N,) index into the objects given


@dataclass(frozen=True)
class ObjectOutputs:
    """Per scored object (``index`` into the objects given): combined log-probs and energy."""

    index: np.ndarray  # (M,)
    log_probs: np.ndarray  # (M, K)
    energy: np.ndarray  # (M,)


def network_chunk_outputs(
    bundle: ModelBundle,
    objects: Sequence[EvalObject],
    device: str | torch.device = "cpu",
    periods: Mapping[tuple[str, str], float] | None = None,
) -> ChunkOutputs:
    """Run the bundle's preprocessing, network and frozen GMM over every chunk of ``objects``.

    ``periods`` {(object_id, band): days} reuses estimates (cross-validation computes them
    once); curves missing from it are estimated by the shared estimator.
    """
    curves = [curve for obj in objects for curve in obj.curves]
    curve_owner = np.repeat(np.arange(len(objects)), [len(obj.curves) for obj in objects])
    period_array = None if periods is None else periods_of(curves, bundle.preprocess, periods)
    batch = prepare_batch(curves, bundle.preprocess, period_array)
    device = resolve_device(device)
    network, gmm = bundle.network.to(device).eval(), bundle.gmm.to(device, torch.float32)
    z, log_probs, energies = [], [], []
    with torch.inference_mode():
        for start in range(0, len(batch), SCORING_BATCH):
            part = slice(start, start + SCORING_BATCH)
            out = network(
                torch.from_numpy(batch.inputs[part]).to(device),
                torch.from_numpy(batch.lengths[part]),
                torch.from_numpy(batch.supports[part]).to(device),
            )
            z.append(out.z.double().cpu().numpy())
            log_probs.append(torch.log_softmax(out.logits, dim=1).double().cpu().numpy())
            energies.append(energy(out.z, gmm).double().cpu().numpy())
    k, d = bundle.network.config.num_classes, bundle.network.config.z_dim
    return ChunkOutputs(
        z=np.concatenate(z) if z else np.zeros((0, d)),
        log_probs=np.concatenate(log_probs) if log_probs else np.zeros((0, k)),
        energy=np.concatenate(energies) if energies else np.zeros(0),
        lengths=batch.lengths,
        owner=curve_owner[batch.owner],
    )


def periods_of(
    curves: Sequence[LightCurve], preprocess: PreprocessConfig, known: Mapping[tuple[str, str], float]
) -> np.ndarray:
    """One period per curve: from ``known`` where present, else estimated as preprocessing would."""
    values = np.array([known.get((c.object_id, c.band), np.nan) for c in curves], dtype=np.float64)
    missing = np.flatnonzero(~np.isfinite(values))
    if missing.size:
        values[missing] = resolve_periods([curves[i] for i in missing], preprocess)
    return values


def combine_objects(chunks: ChunkOutputs) -> ObjectOutputs:
    """Per-object results with the daemon's own combination (:func:`broker_filter.model.scores.combine_chunks`)."""
    combined = combine_chunks([str(i) for i in chunks.owner], chunks.log_probs, chunks.energy, chunks.lengths)
    index = np.array([int(i) for i in combined.object_ids], dtype=np.int64)
    order = np.argsort(index)
    return ObjectOutputs(index[order], combined.log_probs[order], combined.energy[order])


# ---------------------------------------------------------------------------------------
# One split
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Known training objects, known test objects, novel objects (never trained on)."""

    train: list[EvalObject]
    test: list[EvalObject]
    novel: list[EvalObject]


def split_objects(objects: Sequence[EvalObject], test_ids: set[str]) -> Split:
    """Known objects in ``test_ids`` are tested, other known ones trained on; novel are all tested."""
    known = [obj for obj in objects if obj.label is not None]
    return Split(
        train=[obj for obj in known if obj.object_id not in test_ids],
        test=[obj for obj in known if obj.object_id in test_ids],
        novel=[obj for obj in objects if obj.novelty_set is not None],
    )


def held_out_split(bundle: ModelBundle, lcs: Sequence[LightCurve]) -> tuple[Split, bool]:
    """The bundle's own split of ``lcs``, and whether it is truly the one it was trained with.

    Training splits objects with :func:`broker_filter.model.train.stratified_split` (the bundle records
    ``val_frac`` and ``seed``); redoing it on the same data gives the same validation
    objects, which took no part in the weight updates (only in choosing the best epoch).
    The data digest tells whether ``lcs`` are the bundle's training data; if not, the
    same recipe still splits them, but the "test" objects may have been trained on.
    """
    from broker_filter.model.train import TrainConfig, labelled, stratified_split

    recipe = TrainConfig.from_dict(bundle.training.get("config", {}))
    known = labelled(lcs, bundle.class_mapping, bundle.preprocess)
    train_curves, val_curves = stratified_split(known, bundle.class_mapping, recipe.val_frac, recipe.seed)
    same_data = lightcurves_digest([*train_curves, *val_curves]) == bundle.training.get("data_digest")
    objects = group_objects(lcs, bundle.class_mapping, bundle.preprocess.bands)
    return split_objects(objects, {curve.object_id for curve in val_curves}), same_data


@dataclass(frozen=True)
class Scored:
    """One group of objects (train, test or novel) and the network's outputs on them."""

    objects: list[EvalObject]  # every object of the group, scorable or not
    chunks: ChunkOutputs
    combined: ObjectOutputs  # the objects that yielded at least one chunk

    @property
    def scored_objects(self) -> list[EvalObject]:
        return [self.objects[i] for i in self.combined.index]

    def in_set(self, novelty_set: str) -> np.ndarray:
        """Boolean mask over the scored objects: those of one novelty set."""
        return np.array([obj.novelty_set == novelty_set for obj in self.scored_objects], dtype=bool)


def score_group(
    bundle: ModelBundle, objects: list[EvalObject], device, periods: Mapping[tuple[str, str], float] | None
) -> Scored:
    """Chunk outputs and per-object results of one group."""
    chunks = network_chunk_outputs(bundle, objects, device, periods)
    return Scored(objects, chunks, combine_objects(chunks))


def evaluate_split(
    bundle: ModelBundle,
    split: Split,
    *,
    device: str | torch.device = "cpu",
    periods: Mapping[tuple[str, str], float] | None = None,
    seed: int = 0,
    n_points_grid: Sequence[int] = N_POINTS_GRID,
) -> dict:
    """Every figure of the report for one split, as a JSON-able dict (see the module doc)."""
    if not split.test:
        raise EvaluationError("no known-class test objects")
    if not split.novel:
        raise EvaluationError("no novel objects: novelty needs the never-trained classes in the data")
    class_names = list(bundle.class_names)
    train, test, novel = (
        score_group(bundle, objects, device, periods) for objects in (split.train, split.test, split.novel)
    )

    truth = [obj.label for obj in test.scored_objects]
    predicted = [class_names[k] for k in test.combined.log_probs.argmax(axis=1)]
    classification = classification_metrics(truth, predicted, class_names)
    chunk_truth = np.asarray([test.objects[i].label for i in test.chunks.owner], dtype=object)
    chunk_predicted = np.asarray(class_names, dtype=object)[test.chunks.log_probs.argmax(axis=1)]

    present = {obj.novelty_set for obj in novel.scored_objects}
    novelty_sets = [name for name in bundle.class_mapping.novel if name in present]  # the paper's VAR first
    novel_energy = {name: novel.combined.energy[novel.in_set(name)] for name in novelty_sets}
    novelty_by_set = {
        name: novelty_metrics(test.combined.energy, novel_energy[name], bundle.thresholds) for name in novelty_sets
    }
    return {
        "accuracy": classification["accuracy"],
        "accuracy_per_chunk": float(np.mean(chunk_truth == chunk_predicted)),
        "macro_f1": classification["macro_f1"],
        "per_class": classification["per_class"],
        "confusion": {"classes": class_names, "matrix": classification["confusion"]},
        "novelty": {"set": novelty_sets[0], **novelty_by_set[novelty_sets[0]]},
        "novelty_by_set": novelty_by_set,
        "thresholds": dict(bundle.thresholds),
        "accuracy_by_n_points": accuracy_by_n_points(bundle, split.test, device, n_points_grid),
        "counts": _counts(train, test, novel, novelty_sets),
        "energies": {"known_test": test.combined.energy.tolist(), **{k: v.tolist() for k, v in novel_energy.items()}},
        "baselines": _baselines(train, test, novel, class_names, seed),
    }


def _counts(train: Scored, test: Scored, novel: Scored, novelty_sets: Sequence[str]) -> dict:
    scored_sets = [obj.novelty_set for obj in novel.scored_objects]
    all_sets = [obj.novelty_set for obj in novel.objects]
    return {
        "train_objects": len(train.combined.index),
        "train_chunks": int(train.chunks.owner.size),
        "test_objects": len(test.combined.index),
        "test_chunks": int(test.chunks.owner.size),
        "novel_objects": {name: scored_sets.count(name) for name in novelty_sets},
        "unscored": {
            "train": len(train.objects) - len(train.combined.index),
            "test": len(test.objects) - len(test.combined.index),
            **{name: all_sets.count(name) - scored_sets.count(name) for name in sorted(set(all_sets))},
        },
    }


def accuracy_by_n_points(
    bundle: ModelBundle, objects: Sequence[EvalObject], device: str | torch.device, grid: Sequence[int]
) -> dict[str, dict]:
    """Accuracy when only the first n detections of each object are known.

    An object enters the row for n if it has at least n detections; ``scored`` says how
    many of those yield a chunk at all (a band needs ``n_min`` points), and ``accuracy``
    is over the scored ones.
    """
    class_names = list(bundle.class_names)
    rows: dict[str, dict] = {}
    for n in grid:
        eligible = [obj for obj in objects if obj.n_points >= n]
        if not eligible:
            continue
        truncated = [_first_detections(obj, n) for obj in eligible]
        scored = combine_objects(network_chunk_outputs(bundle, truncated, device))
        top = scored.log_probs.argmax(axis=1)
        correct = [class_names[k] == truncated[i].label for i, k in zip(scored.index, top)]
        rows[str(n)] = {
            "objects": len(eligible),
            "scored": int(scored.index.size),
            "accuracy": float(np.mean(correct)) if correct else None,
        }
    return rows


def _first_detections(obj: EvalObject, n: int) -> EvalObject:
    """The object as an alert stream would show it after n detections (all bands, time order)."""
    times = np.concatenate([curve.time for curve in obj.curves])
    cutoff = np.sort(times, kind="stable")[n - 1]
    curves = []
    budget = n
    for curve in obj.curves:
        keep = min(int(np.searchsorted(curve.time, cutoff, side="right")), budget)
        budget -= keep
        curves.append(
            LightCurve(curve.object_id, curve.band, curve.time[:keep], curve.mag[:keep], curve.mag_err[:keep],
                       curve.period, curve.label, curve.source)
        )
    return EvalObject(obj.object_id, tuple(c for c in curves if len(c)), obj.label, obj.novelty_set)


# ---------------------------------------------------------------------------------------
# Baselines on the same split and the same scored objects
# ---------------------------------------------------------------------------------------


def _baselines(train: Scored, test: Scored, novel: Scored, class_names: list[str], seed: int) -> dict:
    groups = {"train": train, "test": test, "novel": novel}
    network_rows = {role: _chunk_rows(group) for role, group in groups.items()}
    curve_rows = {role: _curve_rows(group.scored_objects) for role, group in groups.items()}
    results = {}
    for name, rows in (("network_features", network_rows), ("lightcurve_features", curve_rows)):
        per_chunk = name == "network_features"
        results[f"random_forest_{name}"] = _forest_figures(rows, class_names, seed, per_chunk=per_chunk)
        results[f"isolation_forest_{name}"] = _isolation_figures(rows, seed)
    return results


def _chunk_rows(group: Scored) -> baselines.FeatureRows:
    """The network's chunk features, owned by the scored objects (re-indexed 0..M-1)."""
    position = np.full(len(group.objects), -1, dtype=np.int64)
    position[group.combined.index] = np.arange(group.combined.index.size)
    kept = group.scored_objects
    return baselines.FeatureRows(
        features=group.chunks.z,
        owner=position[group.chunks.owner],
        object_ids=[obj.object_id for obj in kept],
        labels=[obj.label or obj.novelty_set or "" for obj in kept],
    )


def _curve_rows(objects: Sequence[EvalObject]) -> baselines.FeatureRows:
    """Standard light-curve features, one row per (object, band)."""
    curves = [curve for obj in objects for curve in obj.curves]
    owner = np.repeat(np.arange(len(objects)), [len(obj.curves) for obj in objects])
    features, _ = baselines.lightcurve_features([(c.time, c.mag, c.mag_err) for c in curves])
    return baselines.FeatureRows(
        features=features.reshape(len(curves), -1),
        owner=owner,
        object_ids=[obj.object_id for obj in objects],
        labels=[obj.label or obj.novelty_set or "" for obj in objects],
    )


def _forest_figures(rows: Mapping[str, baselines.FeatureRows], class_names, seed: int, per_chunk: bool) -> dict:
    forest = baselines.fit_random_forest(rows["train"], seed)
    probs = baselines.forest_object_probabilities(forest, rows["test"], class_names)
    predicted = [class_names[k] for k in probs.argmax(axis=1)]
    figures = classification_metrics(rows["test"].labels, predicted, class_names)
    result = {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"], "per_class": figures["per_class"]}
    if per_chunk:
        row_predicted = baselines.forest_row_predictions(forest, rows["test"])
        result["accuracy_per_chunk"] = float(np.mean(row_predicted == rows["test"].row_labels))
    return result


def _isolation_figures(rows: Mapping[str, baselines.FeatureRows], seed: int) -> dict:
    forest = baselines.fit_isolation_forest(rows["train"], seed)
    thresholds = percentile_thresholds(baselines.isolation_object_scores(forest, rows["train"]), PAPER_PERCENTILES)
    known = baselines.isolation_object_scores(forest, rows["test"])
    novel_rows = rows["novel"]
    novel = baselines.isolation_object_scores(forest, novel_rows)
    labels = np.asarray(novel_rows.labels, dtype=object)
    return {name: novelty_metrics(known, novel[labels == name], thresholds) for name in sorted(set(novel_rows.labels))}
