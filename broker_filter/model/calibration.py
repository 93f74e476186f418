"""Calibration fitted on objects that training did not fit: novelty p-values and probabilities.

Two things a broker relies on are fixed here, after the network is trained:

* **Novelty p-values by number of points.** The energy of a short light curve is higher
  whatever its class, so one threshold from whole training curves flags most young stars.
  Instead, the energies of held-out known-class objects (the validation split, which no
  weight update saw) are kept per bin of scored points, for every prefix a stream would
  show (the first 20, 25, ... detections, and the whole curve). An object's p-value is the
  share of those energies, in its bin, at least as high as its own (a split-conformal
  p-value: for a known-class object it is uniform, so flagging ``p <= 0.05`` flags 5% of
  them at every age). ``novel`` at the 95th percentile means ``p <= 0.05``.
* **Temperature scaling** (Guo et al. 2017), by number of points: a temperature ``T`` per
  bin divides the combined log-probabilities before the softmax, fitted by likelihood on the
  same objects' prefixes in that bin, so that the top-class probability means what it says
  for a young star (over-confident at 20 points) and for an old one alike.

* **Energy and uncertainty, combined (optional).** The mixture energy says how far an
  object's embedding lies from the known classes; the entropy of its (tempered) class
  probabilities says how unsure the classifier is between them. A calibration fitted with
  ``combine`` keeps, per bin, the held-out entropies and the held-out values of Fisher's
  combination ``-log p_energy - log p_entropy``; the novelty p-value is then the conformal
  p-value of that combination among its held-out values, still uniform for a known-class
  object. In cross-validation it ranks the unseen ASAS-3 classes better than the energy
  alone (AUROC 0.880 against 0.858) but supernovae, which the classifier calls confidently,
  much worse (0.72 against 0.88) (docs/MODEL.md), so it is a training option
  (``novelty="energy+uncertainty"``), not the default.

The bins' values are stored in the bundle (a few thousand numbers), so serving computes
p-values with a few ``searchsorted`` per bin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from broker_filter.model.lightcurve import LightCurve, first_detections

#: Lower edges of the bins of scored points: 20-29, 30-49, 50-99, 100-199, 200-399, 400+ (a
#: calibration counts fewer than 20 points in the first bin). Evaluation and stream reports use
#: the same bins.
N_POINTS_EDGES = (20, 30, 50, 100, 200, 400)
#: Prefixes (detections, all bands in time order) of each calibration object; the whole curve too.
#: A stream scores a long-lived object at every alert, so the old ages are sampled too.
CALIBRATION_PREFIXES = (20, 25, 30, 40, 50, 70, 100, 150, 200, 300, 400, 500, 700, 1000)
#: Percentile keys and the p-value at or below which each flags.
LEVELS = {"p80": 0.20, "p95": 0.05}
#: Held-out rows a bin needs to get a temperature of its own.
MIN_TEMPERATURE_ROWS = 30
_TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(10.0), 400))


@dataclass(frozen=True)
class Calibration:
    """``temperature``: over all held-out rows; ``edges``: bin lower edges (points); ``energies``:
    sorted held-out energies per bin; ``temperatures``: one per bin (all ``temperature`` when absent);
    ``entropies`` and ``combined``: sorted held-out class-probability entropies and Fisher
    combinations per bin (both empty: the p-value is the energy's alone, as in bundles
    calibrated before the combination)."""

    temperature: float
    edges: tuple[int, ...]
    energies: tuple[np.ndarray, ...]
    temperatures: tuple[float, ...] = ()
    entropies: tuple[np.ndarray, ...] = ()
    combined: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if not self.temperatures:
            object.__setattr__(self, "temperatures", (self.temperature,) * len(self.edges))
        if not (self.temperature > 0 and all(t > 0 for t in self.temperatures)):
            raise ValueError("temperatures must be positive")
        if not (len(self.edges) == len(self.energies) == len(self.temperatures)) or any(e.size == 0 for e in self.energies):
            raise ValueError("calibration needs one non-empty energy list and one temperature per bin")
        if bool(self.entropies) != bool(self.combined) or (self.combines and not (
                len(self.entropies) == len(self.combined) == len(self.edges)
                and all(e.size and c.size for e, c in zip(self.entropies, self.combined)))):
            raise ValueError("a combined calibration needs one non-empty entropy and combination list per bin")

    @property
    def combines(self) -> bool:
        """Whether the p-value combines the energy with the classification's uncertainty."""
        return bool(self.combined)

    def temperature_at(self, n_points: np.ndarray) -> np.ndarray:
        """The temperature of each object's bin of scored points."""
        return np.asarray(self.temperatures, dtype=np.float64)[self.bins(n_points)]

    def bins(self, n_points: np.ndarray) -> np.ndarray:
        """Bin index of each number of points."""
        index = np.searchsorted(np.asarray(self.edges), np.asarray(n_points), side="right") - 1
        return np.clip(index, 0, len(self.edges) - 1)

    def p_values(self, energy: np.ndarray, n_points: np.ndarray, probs: np.ndarray | None = None) -> np.ndarray:
        """Novelty p-values within each object's bin of points (see the module doc).

        ``probs`` (M, K): the tempered class probabilities served with each energy; a
        combining calibration needs them, an energy-only one ignores them.
        """
        bins = self.bins(n_points)
        p_energy = _conformal(self.energies, np.asarray(energy, dtype=np.float64), bins)
        if not self.combines:
            return p_energy
        if probs is None:
            raise ValueError("this calibration combines energy and uncertainty: the class probabilities are needed")
        p_entropy = _conformal(self.entropies, entropy(probs), bins)
        return _conformal(self.combined, fisher(p_energy, p_entropy), bins)

    def threshold(self, n_points: np.ndarray, key: str) -> np.ndarray:
        """The energy above which an object of ``n_points`` is flagged at ``key`` (informative).

        Under a combining calibration this is the cut on the energy alone; the flag itself
        also weighs the class uncertainty, so an object may be flagged below it or not above it.
        """
        return self._cuts[key][np.atleast_1d(self.bins(n_points))]

    @cached_property
    def _cuts(self) -> dict[str, np.ndarray]:
        """Per level, the per-bin energy quantiles (computed once: records quote them at every scoring)."""
        return {key: np.array([np.quantile(e, 1.0 - level) for e in self.energies]) for key, level in LEVELS.items()}

    def to_dict(self) -> dict:
        per_bin = {} if set(self.temperatures) == {self.temperature} else {"temperatures": [float(t) for t in self.temperatures]}
        combination = {} if not self.combines else {
            "entropies": [[float(v) for v in e] for e in self.entropies],
            "combined": [[float(v) for v in c] for c in self.combined],
        }
        return {
            "temperature": float(self.temperature),
            **per_bin,
            "n_points_edges": list(self.edges),
            "energies": [[float(v) for v in e] for e in self.energies],
            **combination,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        return cls(
            float(data["temperature"]),
            tuple(int(e) for e in data["n_points_edges"]),
            tuple(np.sort(np.asarray(e, dtype=np.float64)) for e in data["energies"]),
            tuple(float(t) for t in data.get("temperatures", ())),
            tuple(np.sort(np.asarray(e, dtype=np.float64)) for e in data.get("entropies", ())),
            tuple(np.sort(np.asarray(c, dtype=np.float64)) for c in data.get("combined", ())),
        )


def _conformal(references: Sequence[np.ndarray], values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """(1 + #{references >= v}) / (1 + #references), with each value's bin's sorted references."""
    out = np.ones(values.shape, dtype=np.float64)
    for b in np.unique(bins):
        pick = bins == b
        reference = references[b]
        at_least = reference.size - np.searchsorted(reference, values[pick], side="left")
        out[pick] = (1.0 + at_least) / (1.0 + reference.size)
    return out


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of class probabilities: 0 when sure, log K when lost."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -terms.sum(axis=1)


def fisher(p_energy: np.ndarray, p_entropy: np.ndarray) -> np.ndarray:
    """Fisher's combination of two p-values, ``-log p1 - log p2`` (higher: more novel)."""
    return -np.log(p_energy) - np.log(p_entropy)


def novel_flags(p_values: np.ndarray) -> np.ndarray:
    """(M, 2) bool, one column per :data:`LEVELS` key in order (p80, p95)."""
    p = np.asarray(p_values, dtype=np.float64)
    return np.stack([p <= level for level in LEVELS.values()], axis=-1)


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (grid search, 0.2-10)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    best, best_nll = 1.0, np.inf
    for t in _TEMPERATURES:
        scaled = log_probs / t
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        nll = float(np.mean(log_norm - scaled[np.arange(labels.size), labels]))
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def fit_calibration(
    log_probs: np.ndarray, labels: np.ndarray, energies: np.ndarray, n_points: np.ndarray,
    edges: Sequence[int] = N_POINTS_EDGES, combine: bool = False,
) -> Calibration:
    """Temperatures and per-bin references from held-out known-class scores (one row per object and prefix).

    A bin no held-out score fell in borrows the nearest non-empty bin's values (a bundle
    trained on short curves only has no 400+ bin, and serving must still answer there); a
    bin with fewer than ``MIN_TEMPERATURE_ROWS`` rows takes the temperature of all rows.
    ``combine``: also keep the entropies and Fisher combinations (see the module doc).
    """
    energies = np.asarray(energies, dtype=np.float64)
    n_points = np.asarray(n_points)
    if energies.size == 0:
        raise ValueError("no held-out scores to calibrate on")
    index = np.clip(np.searchsorted(np.asarray(edges), n_points, side="right") - 1, 0, len(edges) - 1)
    present = [b for b in range(len(edges)) if (index == b).any()]
    source = [b if b in present else min(present, key=lambda p: abs(p - b)) for b in range(len(edges))]

    def per_bin(values: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.sort(values[index == source[b]]) for b in range(len(edges)))

    log_probs, labels = np.asarray(log_probs, dtype=np.float64), np.asarray(labels)
    overall = fit_temperature(log_probs, labels)
    temperatures = tuple(fit_temperature(log_probs[index == b], labels[index == b])
                         if (index == b).sum() >= MIN_TEMPERATURE_ROWS else overall for b in range(len(edges)))
    energy_refs = per_bin(energies)
    if not combine:
        return Calibration(overall, tuple(int(e) for e in edges), energy_refs, temperatures)
    scaled = log_probs / np.asarray(temperatures)[index][:, None]
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    uncertainty = entropy(probs / probs.sum(axis=1, keepdims=True))
    entropy_refs = per_bin(uncertainty)
    combined = fisher(_conformal(energy_refs, energies, index), _conformal(entropy_refs, uncertainty, index))
    return Calibration(overall, tuple(int(e) for e in edges), energy_refs, temperatures, entropy_refs, per_bin(combined))


def calibration_curves(
    objects: Mapping[str, Sequence[LightCurve]], prefixes: Sequence[int] = CALIBRATION_PREFIXES
) -> list[LightCurve]:
    """Every prefix of every object a stream would show, as light curves of ids ``object#n``.

    ``objects``: object id -> its light curves. The whole curve is one of the prefixes
    (``object#all``); a prefix at least as long as the object is skipped.
    """
    out: list[LightCurve] = []
    for object_id, curves in objects.items():
        total = sum(len(c) for c in curves)
        for n in [*[p for p in prefixes if p < total], None]:
            part = curves if n is None else first_detections(curves, n)
            tag = "all" if n is None else str(n)
            out.extend(LightCurve(f"{object_id}#{tag}", c.band, c.time, c.mag, c.mag_err, c.period, c.label, c.source)
                       for c in part)
    return out


def point_bins(n_points: np.ndarray, edges: Sequence[int] = N_POINTS_EDGES) -> list[tuple[str, np.ndarray]]:
    """Each bin's name (``20-29`` ... ``400+``) and the mask of ``n_points`` in it (none below the first edge)."""
    n_points = np.asarray(n_points)
    bounds = [*edges[1:], None]
    return [(f"{low}+" if high is None else f"{low}-{high - 1}",
             (n_points >= low) & (True if high is None else n_points < high)) for low, high in zip(edges, bounds)]


def reliability(top_prob: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of the top-class probability, and the reliability diagram's bins."""
    top_prob, correct = np.asarray(top_prob, dtype=np.float64), np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, top_prob, side="right") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        pick = which == b
        if pick.any():
            confidence, accuracy = float(top_prob[pick].mean()), float(correct[pick].mean())
            ece += pick.mean() * abs(confidence - accuracy)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(pick.sum()),
                         "confidence": confidence, "accuracy": accuracy})
    return {"ece": float(ece), "objects": int(top_prob.size), "bins": rows}
