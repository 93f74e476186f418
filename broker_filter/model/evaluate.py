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
  re-estimated: how the classification matures while a star is being observed; the
  network beside both random forests (fitted on the training objects' whole curves, fed
  the same truncated objects).
- ``false_alarms_by_n_points``: over the same truncations of the known test objects, the
  share flagged novel at p80 and p95, by bin of scored points: a calibrated bundle should
  flag 20% and 5% in every bin (:mod:`broker_filter.model.calibration`).
- ``by_survey_band``: accuracy per source survey (whole objects), and per survey and band
  with each object scored on that band's light curve alone: how a bundle trained mostly
  on V transfers to other bands.
- ``calibration``: expected calibration error of the top-class probability per object
  (whole curves, and all truncations pooled), with the reliability diagram's bins.
- Objects with no chunk (fewer than ``n_min`` points in every accepted band) cannot be
  scored by the network; they are counted (``unscored``) and left out of every method's
  figures, so that all rows of a table are measured on the same objects.
"""

from __future__ import annotations

import logging
import time
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
from broker_filter.model.lightcurve import first_detections
from broker_filter.model.metrics import (
    PAPER_PERCENTILES,
    classification_metrics,
    novelty_metrics,
    percentile_thresholds,
)
from broker_filter.model.progress import progress_bar
from broker_filter.model.calibration import CALIBRATION_PREFIXES, LEVELS, point_bins, reliability
from broker_filter.model.scores import THRESHOLD_KEYS, calibrated_probs, combine_chunks, novelty

log = logging.getLogger(__name__)
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
    """Per scored object (``index`` into the objects given): combined log-probs, energy, points scored."""

    index: np.ndarray  # (M,)
    log_probs: np.ndarray  # (M, K)
    energy: np.ndarray  # (M,)
    n_points: np.ndarray  # (M,)


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
    return ObjectOutputs(index[order], combined.log_probs[order], combined.energy[order], combined.n_points[order])


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


def external_split(bundle: ModelBundle, lcs: Sequence[LightCurve], train_lcs: Sequence[LightCurve]) -> tuple[Split, dict]:
    """Every object of ``lcs`` is tested; the baselines train on the bundle's training objects of ``train_lcs``.

    ``lcs`` is independent of the bundle (a user's own labelled stars, or a split held out
    before training), so no split is re-made in it. Returns the split and a record of how
    it was made: whether ``train_lcs`` is the bundle's training data (digest) and how many
    objects of ``lcs`` the bundle did train on (0 unless the two sets overlap).
    """
    reference, same_data = held_out_split(bundle, train_lcs)
    trained_ids = {obj.object_id for obj in reference.train}
    objects = group_objects(lcs, bundle.class_mapping, bundle.preprocess.bands)
    split = Split(train=reference.train, test=[obj for obj in objects if obj.label is not None],
                  novel=[obj for obj in objects if obj.novelty_set is not None])
    overlap = sum(obj.object_id in trained_ids for obj in objects)
    return split, {"train_data_is_bundle_data": same_data, "objects_trained_on": overlap}


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


def _stage(bar, value):
    """``value``, once the step that made it is counted on ``bar``."""
    bar.update(1)
    return value


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
    started = time.monotonic()
    log.info("evaluate: scoring %d training, %d test and %d novel objects", len(split.train), len(split.test), len(split.novel))
    stages = progress_bar(total=5, desc="evaluate", unit="stage")  # train, test, novel, baselines, by number of points
    train, test, novel = (
        _stage(stages, score_group(bundle, objects, device, periods)) for objects in (split.train, split.test, split.novel)
    )
    log.info("evaluate: scored in %.0f s; fitting the baselines, then the figures by number of points", time.monotonic() - started)

    truth = [obj.label for obj in test.scored_objects]
    predicted = [class_names[k] for k in test.combined.log_probs.argmax(axis=1)]
    classification = classification_metrics(truth, predicted, class_names)
    chunk_truth = np.asarray([test.objects[i].label for i in test.chunks.owner], dtype=object)
    chunk_predicted = np.asarray(class_names, dtype=object)[test.chunks.log_probs.argmax(axis=1)]

    present = {obj.novelty_set for obj in novel.scored_objects}
    novelty_sets = [name for name in bundle.class_mapping.novel if name in present]  # the paper's VAR first
    novel_energy = {name: novel.combined.energy[novel.in_set(name)] for name in novelty_sets}
    known_score, novel_score, cuts = novelty_scores(bundle, test.combined), novelty_scores(bundle, novel.combined), flag_cuts(bundle)
    novelty_by_set = {
        name: {**novelty_metrics(known_score, novel_score[novel.in_set(name)], cuts),
               "auroc_energy": novelty_metrics(test.combined.energy, novel_energy[name], bundle.thresholds)["auroc"]}
        for name in novelty_sets
    }
    forests = _stage(stages, _fit_forests(train, class_names, seed))
    stream = _stage(stages, stream_figures(bundle, split.test, device, forests, n_points_grid))
    stages.close()
    log.info("evaluate: done in %.0f s", time.monotonic() - started)
    whole_probs = calibrated_probs(test.combined.log_probs, bundle.calibration, test.combined.n_points)
    correct = np.array([class_names[k] == label for k, label in zip(whole_probs.argmax(axis=1), truth)])
    return {
        "accuracy": classification["accuracy"],
        "accuracy_per_chunk": float(np.mean(chunk_truth == chunk_predicted)),
        "macro_f1": classification["macro_f1"],
        "per_class": classification["per_class"],
        "confusion": {"classes": class_names, "matrix": classification["confusion"]},
        "novelty": {"set": novelty_sets[0], **novelty_by_set[novelty_sets[0]]},
        "novelty_by_set": novelty_by_set,
        "thresholds": dict(bundle.thresholds),
        "accuracy_by_n_points": stream["accuracy_by_n_points"],
        "false_alarms_by_n_points": stream["false_alarms_by_n_points"],
        "calibration": {"whole_curves": reliability(whole_probs.max(axis=1), correct),
                        "all_truncations": stream["calibration"],
                        "temperature": bundle.calibration.temperature if bundle.calibration else None,
                        "temperatures": list(bundle.calibration.temperatures) if bundle.calibration else None},
        "counts": _counts(train, test, novel, novelty_sets),
        "energies": {"known_test": test.combined.energy.tolist(), **{k: v.tolist() for k, v in novel_energy.items()}},
        "baselines": _baselines(forests, test, novel, class_names),
        "by_survey_band": survey_band_figures(bundle, test, device, periods),
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


#: Truncations behind ``false_alarms_by_n_points`` and the pooled calibration: the ages the
#: calibration itself sees, binned by scored points as it bins them.
FALSE_ALARM_GRID = CALIBRATION_PREFIXES


def novelty_scores(bundle: ModelBundle, combined: ObjectOutputs) -> np.ndarray:
    """What the flag compares: minus the p-value for a calibrated bundle (higher = more novel), else the energy."""
    if bundle.calibration is None:
        return combined.energy
    probs = calibrated_probs(combined.log_probs, bundle.calibration, combined.n_points)
    return -novelty(combined.energy, combined.n_points, bundle.thresholds, bundle.calibration, probs)[0]


def flag_cuts(bundle: ModelBundle) -> dict[str, float]:
    """The cuts :func:`novelty_scores` is compared with (flagged when above)."""
    if bundle.calibration is None:
        return dict(bundle.thresholds)
    return {key: -level - 1e-12 for key, level in LEVELS.items()}


def stream_figures(bundle: ModelBundle, objects: Sequence[EvalObject], device: str | torch.device,
                   forests: Mapping, grid: Sequence[int]) -> dict:
    """Accuracy (network and forests), false alarms and calibration of objects cut to their first n detections.

    An object enters the row for n if it has at least n detections; ``scored`` says how
    many of those yield a chunk at all (a band needs ``n_min`` points), and accuracies are
    over the scored ones (the forests see the same scored objects).
    """
    class_names = list(bundle.class_names)
    rows: dict[str, dict] = {}
    flags, n_scored, top_prob, right = [], [], [], []
    for n in sorted(set(grid) | set(FALSE_ALARM_GRID)):
        eligible = [obj for obj in objects if obj.n_points >= n]
        if not eligible:
            continue
        truncated = [_first_detections(obj, n) for obj in eligible]
        chunks = network_chunk_outputs(bundle, truncated, device)
        group = Scored(truncated, chunks, combine_objects(chunks))
        probs = calibrated_probs(group.combined.log_probs, bundle.calibration, group.combined.n_points)
        truth = [obj.label for obj in group.scored_objects]
        correct = np.array([class_names[k] == label for k, label in zip(probs.argmax(axis=1), truth)], dtype=bool)
        if n in FALSE_ALARM_GRID and len(group.combined.index):
            flags.append(novelty_scores(bundle, group.combined)[:, None] > np.array(list(flag_cuts(bundle).values()))[None, :])
            n_scored.append(group.combined.n_points)
            top_prob.append(probs.max(axis=1))
            right.append(correct)
        if n not in grid:
            continue
        row = {"objects": len(eligible), "scored": int(group.combined.index.size),
               "accuracy": float(np.mean(correct)) if correct.size else None}
        if correct.size:
            row["random_forest_network_features"] = _forest_accuracy(forests["network_features"], _chunk_rows(group), class_names)
            row["random_forest_lightcurve_features"] = _forest_accuracy(
                forests["lightcurve_features"], _curve_rows(group.scored_objects), class_names)
        rows[str(n)] = row
    return {
        "accuracy_by_n_points": rows,
        "false_alarms_by_n_points": _false_alarm_bins(np.concatenate(flags), np.concatenate(n_scored)) if flags else {},
        "calibration": reliability(np.concatenate(top_prob), np.concatenate(right)) if top_prob else {},
    }


def survey_band_figures(bundle: ModelBundle, test: Scored, device, periods) -> dict:
    """Accuracy per source survey (all bands) and per (survey, band) from one band at a time."""
    class_names = list(bundle.class_names)

    def accuracy(objects: Sequence[EvalObject], log_probs: np.ndarray) -> dict:
        correct = [class_names[k] == obj.label for obj, k in zip(objects, log_probs.argmax(axis=1))]
        return {"objects": len(correct), "accuracy": float(np.mean(correct)) if correct else None}

    scored = test.scored_objects
    source_of = [obj.curves[0].source or "unknown" for obj in scored]
    by_source = {s: accuracy([o for o, t in zip(scored, source_of) if t == s],
                             test.combined.log_probs[[t == s for t in source_of]]) for s in sorted(set(source_of))}
    by_band = {}
    pairs = sorted({(c.source or "unknown", c.band) for obj in test.objects for c in obj.curves})
    for source, band in pairs:
        single = [EvalObject(obj.object_id, tuple(c for c in obj.curves if c.band == band), obj.label, None)
                  for obj in test.objects if any(c.band == band and (c.source or "unknown") == source for c in obj.curves)]
        combined = combine_objects(network_chunk_outputs(bundle, single, device, periods))
        by_band[f"{source}:{band}"] = accuracy([single[i] for i in combined.index], combined.log_probs)
    return {"by_source": by_source, "by_band": by_band}


def _false_alarm_bins(flags: np.ndarray, n_points: np.ndarray) -> dict[str, dict]:
    out = {}
    for name, pick in point_bins(n_points):
        out[name] = {"scorings": int(pick.sum()),
                     **({f"rate_{key}": float(flags[pick, k].mean()) for k, key in enumerate(THRESHOLD_KEYS)} if pick.any() else {})}
    return out


def _first_detections(obj: EvalObject, n: int) -> EvalObject:
    """The object as an alert stream would show it after n detections (all bands, time order)."""
    return EvalObject(obj.object_id, first_detections(obj.curves, n), obj.label, obj.novelty_set)


# ---------------------------------------------------------------------------------------
# Baselines on the same split and the same scored objects
# ---------------------------------------------------------------------------------------


def _fit_forests(train: Scored, class_names: list[str], seed: int) -> dict:
    """Random and isolation forests on each feature set of the training objects (whole curves)."""
    rows = {"network_features": _chunk_rows(train), "lightcurve_features": _curve_rows(train.scored_objects)}
    return {**{name: baselines.fit_random_forest(r, seed) for name, r in rows.items()},
            **{f"isolation_{name}": (baselines.fit_isolation_forest(r, seed), r) for name, r in rows.items()}}


def _baselines(forests: Mapping, test: Scored, novel: Scored, class_names: list[str]) -> dict:
    results = {}
    for name, rows_of in (("network_features", lambda g: _chunk_rows(g)), ("lightcurve_features", lambda g: _curve_rows(g.scored_objects))):
        test_rows, novel_rows = rows_of(test), rows_of(novel)
        results[f"random_forest_{name}"] = _forest_figures(forests[name], test_rows, class_names, per_chunk=name == "network_features")
        results[f"isolation_forest_{name}"] = _isolation_figures(*forests[f"isolation_{name}"], test_rows, novel_rows)
    return results


def _forest_accuracy(forest, rows: baselines.FeatureRows, class_names) -> float:
    probs = baselines.forest_object_probabilities(forest, rows, class_names)
    return float(np.mean([class_names[k] == label for k, label in zip(probs.argmax(axis=1), rows.labels)]))


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


def _forest_figures(forest, test_rows: baselines.FeatureRows, class_names, per_chunk: bool) -> dict:
    probs = baselines.forest_object_probabilities(forest, test_rows, class_names)
    predicted = [class_names[k] for k in probs.argmax(axis=1)]
    figures = classification_metrics(test_rows.labels, predicted, class_names)
    result = {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"], "per_class": figures["per_class"]}
    if per_chunk:
        row_predicted = baselines.forest_row_predictions(forest, test_rows)
        result["accuracy_per_chunk"] = float(np.mean(row_predicted == test_rows.row_labels))
    return result


def _isolation_figures(forest, train_rows: baselines.FeatureRows, test_rows: baselines.FeatureRows,
                       novel_rows: baselines.FeatureRows) -> dict:
    thresholds = percentile_thresholds(baselines.isolation_object_scores(forest, train_rows), PAPER_PERCENTILES)
    known = baselines.isolation_object_scores(forest, test_rows)
    novel = baselines.isolation_object_scores(forest, novel_rows)
    labels = np.asarray(novel_rows.labels, dtype=object)
    return {name: novelty_metrics(known, novel[labels == name], thresholds) for name in sorted(set(novel_rows.labels))}
