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

The bins' energies are stored in the bundle (a few thousand numbers), so serving computes
p-values with one ``searchsorted`` per bin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from broker_filter.model.lightcurve import LightCurve, first_detections

#: Lower edges of the bins of scored points: 20-29, 30-49, 50-99, 100-199, 200+ (a calibration
#: counts fewer than 20 points in the first bin). Evaluation and stream reports use the same bins.
N_POINTS_EDGES = (20, 30, 50, 100, 200)
#: Prefixes (detections, all bands in time order) of each calibration object; the whole curve too.
CALIBRATION_PREFIXES = (20, 25, 30, 40, 50, 70, 100, 150, 200, 300)
#: Percentile keys and the p-value at or below which each flags.
LEVELS = {"p80": 0.20, "p95": 0.05}
#: Held-out rows a bin needs to get a temperature of its own.
MIN_TEMPERATURE_ROWS = 30
_TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(10.0), 400))


@dataclass(frozen=True)
class Calibration:
    """``temperature``: over all held-out rows; ``edges``: bin lower edges (points); ``energies``:
    sorted held-out energies per bin; ``temperatures``: one per bin (all ``temperature`` when absent)."""

    temperature: float
    edges: tuple[int, ...]
    energies: tuple[np.ndarray, ...]
    temperatures: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.temperatures:
            object.__setattr__(self, "temperatures", (self.temperature,) * len(self.edges))
        if not (self.temperature > 0 and all(t > 0 for t in self.temperatures)):
            raise ValueError("temperatures must be positive")
        if not (len(self.edges) == len(self.energies) == len(self.temperatures)) or any(e.size == 0 for e in self.energies):
            raise ValueError("calibration needs one non-empty energy list and one temperature per bin")

    def temperature_at(self, n_points: np.ndarray) -> np.ndarray:
        """The temperature of each object's bin of scored points."""
        return np.asarray(self.temperatures, dtype=np.float64)[self.bins(n_points)]

    def bins(self, n_points: np.ndarray) -> np.ndarray:
        """Bin index of each number of points."""
        index = np.searchsorted(np.asarray(self.edges), np.asarray(n_points), side="right") - 1
        return np.clip(index, 0, len(self.edges) - 1)

    def p_values(self, energy: np.ndarray, n_points: np.ndarray) -> np.ndarray:
        """(1 + #{held-out energies >= e}) / (1 + #held-out), within the object's bin."""
        energy = np.asarray(energy, dtype=np.float64)
        bins = self.bins(n_points)
        out = np.ones(energy.shape, dtype=np.float64)
        for b in np.unique(bins):
            pick = bins == b
            reference = self.energies[b]
            at_least = reference.size - np.searchsorted(reference, energy[pick], side="left")
            out[pick] = (1.0 + at_least) / (1.0 + reference.size)
        return out

    def threshold(self, n_points: np.ndarray, key: str) -> np.ndarray:
        """The energy above which an object of ``n_points`` is flagged at ``key`` (informative)."""
        return self._cuts[key][np.atleast_1d(self.bins(n_points))]

    @cached_property
    def _cuts(self) -> dict[str, np.ndarray]:
        """Per level, the per-bin energy quantiles (computed once: records quote them at every scoring)."""
        return {key: np.array([np.quantile(e, 1.0 - level) for e in self.energies]) for key, level in LEVELS.items()}

    def to_dict(self) -> dict:
        per_bin = {} if set(self.temperatures) == {self.temperature} else {"temperatures": [float(t) for t in self.temperatures]}
        return {
            "temperature": float(self.temperature),
            **per_bin,
            "n_points_edges": list(self.edges),
            "energies": [[float(v) for v in e] for e in self.energies],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        return cls(
            float(data["temperature"]),
            tuple(int(e) for e in data["n_points_edges"]),
            tuple(np.sort(np.asarray(e, dtype=np.float64)) for e in data["energies"]),
            tuple(float(t) for t in data.get("temperatures", ())),
        )


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
    edges: Sequence[int] = N_POINTS_EDGES,
) -> Calibration:
    """Temperatures and per-bin energies from held-out known-class scores (one row per object and prefix).

    A bin no held-out score fell in borrows the nearest non-empty bin's energies (a bundle
    trained on short curves only has no 200+ bin, and serving must still answer there); a
    bin with fewer than ``MIN_TEMPERATURE_ROWS`` rows takes the temperature of all rows.
    """
    energies = np.asarray(energies, dtype=np.float64)
    n_points = np.asarray(n_points)
    if energies.size == 0:
        raise ValueError("no held-out scores to calibrate on")
    index = np.clip(np.searchsorted(np.asarray(edges), n_points, side="right") - 1, 0, len(edges) - 1)
    filled = [np.sort(energies[index == b]) for b in range(len(edges))]
    present = [b for b in range(len(edges)) if filled[b].size]
    per_bin = tuple(filled[b] if filled[b].size else filled[min(present, key=lambda p: abs(p - b))] for b in range(len(edges)))
    log_probs, labels = np.asarray(log_probs, dtype=np.float64), np.asarray(labels)
    overall = fit_temperature(log_probs, labels)
    temperatures = tuple(fit_temperature(log_probs[index == b], labels[index == b])
                         if (index == b).sum() >= MIN_TEMPERATURE_ROWS else overall for b in range(len(edges)))
    return Calibration(overall, tuple(int(e) for e in edges), per_bin, temperatures)


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
    """Each bin's name (``20-29`` ... ``200+``) and the mask of ``n_points`` in it (none below the first edge)."""
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
