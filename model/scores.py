"""Per-object results: how chunk outputs are combined into one score per object.

An object can yield several chunks (a long light curve, or several bands). Its class
probabilities are the softmax of the mean chunk log-probabilities (a normalised
geometric mean: chunks vote in log space, as independent evidence would), and its energy
is the mean chunk energy. Novelty thresholds are percentiles of training energies
combined the same way, so the comparison is like with like. Both the reference scorer
(:meth:`model.bundle.ModelBundle.score`) and the fast serving scorer use
:func:`combine_chunks`, so they agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLD_KEYS = ("p80", "p95")


@dataclass(frozen=True)
class ObjectScore:
    """One object's classification and novelty verdict.

    ``probs``: class name -> probability (sums to 1). ``energy``: mean chunk energy (higher
    means less like any known class). ``novel``: {"p80": energy > 80th percentile of
    training energies, "p95": same at the 95th}. ``n_points``/``n_chunks``: points and
    chunks that went into the score (over all its bands).
    """

    object_id: str
    probs: dict[str, float]
    top_class: str
    energy: float
    n_points: int
    n_chunks: int
    novel: dict[str, bool]

    def to_dict(self) -> dict:
        return {
            "object_id": self.object_id,
            "probs": dict(self.probs),
            "top_class": self.top_class,
            "energy": self.energy,
            "n_points": self.n_points,
            "n_chunks": self.n_chunks,
            "novel": dict(self.novel),
        }


@dataclass(frozen=True)
class CombinedChunks:
    """Per-object arrays: ``object_ids`` (M,), ``log_probs`` (M, K), ``energy`` (M,), ``n_points``, ``n_chunks``."""

    object_ids: list[str]
    log_probs: np.ndarray
    energy: np.ndarray
    n_points: np.ndarray
    n_chunks: np.ndarray


def combine_chunks(
    chunk_object_ids: Sequence[str], log_probs: np.ndarray, energies: np.ndarray, lengths: np.ndarray
) -> CombinedChunks:
    """Group chunks by object id (first-appearance order); mean log-probs renormalised, mean energy."""
    ids, first, inverse = np.unique(np.asarray(chunk_object_ids, dtype=object), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-appearance order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    group = rank[inverse]
    n_chunks = np.bincount(group, minlength=order.size)
    mean_log = np.zeros((order.size, log_probs.shape[1]), dtype=np.float64)
    np.add.at(mean_log, group, np.asarray(log_probs, dtype=np.float64))
    mean_log /= n_chunks[:, None]
    mean_log -= _logsumexp(mean_log)[:, None]
    energy = np.bincount(group, weights=np.asarray(energies, dtype=np.float64), minlength=order.size) / n_chunks
    n_points = np.bincount(group, weights=np.asarray(lengths, dtype=np.float64), minlength=order.size).astype(np.int64)
    return CombinedChunks([str(i) for i in ids[order]], mean_log, energy, n_points, n_chunks)


def object_scores(combined: CombinedChunks, class_names: Sequence[str], thresholds: Mapping[str, float]) -> list[ObjectScore]:
    """ObjectScore per combined object."""
    probs = np.exp(combined.log_probs)
    top = probs.argmax(axis=1)
    return [
        ObjectScore(
            object_id=object_id,
            probs={name: float(p) for name, p in zip(class_names, probs[i])},
            top_class=class_names[top[i]],
            energy=float(combined.energy[i]),
            n_points=int(combined.n_points[i]),
            n_chunks=int(combined.n_chunks[i]),
            novel={key: bool(combined.energy[i] > thresholds[key]) for key in THRESHOLD_KEYS},
        )
        for i, object_id in enumerate(combined.object_ids)
    ]


def _logsumexp(a: np.ndarray) -> np.ndarray:
    peak = a.max(axis=1)
    return peak + np.log(np.exp(a - peak[:, None]).sum(axis=1))
