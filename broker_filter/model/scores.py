"""Per-object results: how chunk outputs are combined into one score per object.

An object can yield several chunks (a long light curve, or several bands). Its class
probabilities are the softmax of the mean chunk log-probabilities (a normalised
geometric mean: chunks vote in log space, as independent evidence would), and its energy
is the mean chunk energy. Novelty thresholds are percentiles of training energies
combined the same way, so the comparison is like with like. Both the reference scorer
(:meth:`broker_filter.model.bundle.ModelBundle.score`) uses :func:`combine_chunks`; the serving scorer
does the same sums on the device (:func:`sum_chunks` then :func:`finish_objects`, with an
integer object row per chunk instead of string ids) and returns a :class:`ScoreBatch`,
whose :meth:`ScoreBatch.object_scores` gives the reference's list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from broker_filter.model.lightcurve import first_appearance

if TYPE_CHECKING:
    import torch

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
    ids, group = first_appearance(np.asarray(chunk_object_ids, dtype=object))
    n_objects = ids.size
    n_chunks = np.bincount(group, minlength=n_objects)
    mean_log = np.zeros((n_objects, log_probs.shape[1]), dtype=np.float64)
    np.add.at(mean_log, group, np.asarray(log_probs, dtype=np.float64))
    mean_log /= n_chunks[:, None]
    mean_log -= _logsumexp(mean_log)[:, None]
    energy = np.bincount(group, weights=np.asarray(energies, dtype=np.float64), minlength=n_objects) / n_chunks
    n_points = np.bincount(group, weights=np.asarray(lengths, dtype=np.float64), minlength=n_objects).astype(np.int64)
    return CombinedChunks([str(i) for i in ids], mean_log, energy, n_points, n_chunks)


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


@dataclass(frozen=True)
class ScoreBatch:
    """Per-object results as columns: what serving returns before anyone asks for objects.

    One row per object that yielded at least one chunk, in first-appearance order (as
    :func:`combine_chunks`). ``object_index`` (M,): the object's position in the input
    :class:`~broker_filter.model.lightcurve.LightCurveBatch`'s ``object_ids``; ``probs`` (M, K) float64;
    ``energy`` (M,) float64; ``n_points``, ``n_chunks`` (M,) int64; ``novel`` (M, 2) bool
    for ``THRESHOLD_KEYS``. Building an :class:`ObjectScore` (a dataclass and two dicts)
    per object costs more than scoring it on a GPU, so that happens only on request.
    """

    object_ids: np.ndarray
    object_index: np.ndarray
    probs: np.ndarray
    energy: np.ndarray
    n_points: np.ndarray
    n_chunks: np.ndarray
    novel: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.object_index.size)

    @property
    def top_class(self) -> np.ndarray:
        """(M,) index of the most probable class."""
        return self.probs.argmax(axis=1)

    def object_scores(self) -> list[ObjectScore]:
        """The :class:`ObjectScore` list, equal to :func:`object_scores` of the reference combination."""
        top = self.top_class
        probs = self.probs.tolist()
        energy = self.energy.tolist()
        n_points, n_chunks, novel = self.n_points.tolist(), self.n_chunks.tolist(), self.novel.tolist()
        names = self.class_names
        return [
            ObjectScore(
                object_id=str(self.object_ids[i]),
                probs=dict(zip(names, probs[i])),
                top_class=names[top[i]],
                energy=energy[i],
                n_points=n_points[i],
                n_chunks=n_chunks[i],
                novel=dict(zip(THRESHOLD_KEYS, novel[i])),
            )
            for i in range(len(self))
        ]


def sum_chunks(rows: torch.Tensor, log_probs: torch.Tensor, energies: torch.Tensor, out_log: torch.Tensor, out_energy: torch.Tensor) -> None:
    """Add chunk log-probabilities (N, K) and energies (N,) into per-object rows (``index_add_``, float64).

    ``rows`` (N,) int64: each chunk's object row. The integer row replaces
    :func:`combine_chunks`'s ``np.unique`` over string ids; summing in float64 keeps the
    result independent of the order in which batches arrive.
    """
    out_log.index_add_(0, rows, log_probs.double())
    out_energy.index_add_(0, rows, energies.double())


def finish_objects(sum_log: torch.Tensor, sum_energy: torch.Tensor, n_chunks: torch.Tensor, thresholds: torch.Tensor):
    """Per-object (probs (M, K), energy (M,), novel (M, T)) from chunk sums, as :func:`combine_chunks` does.

    Mean log-probabilities renormalised by their log-sum-exp, mean energy, and the energy
    compared with each threshold (``thresholds`` (T,) in ``THRESHOLD_KEYS`` order).
    """
    import torch

    mean_log = sum_log / n_chunks[:, None]
    probs = torch.exp(mean_log - torch.logsumexp(mean_log, dim=1, keepdim=True))
    energy = sum_energy / n_chunks
    return probs, energy, energy[:, None] > thresholds[None, :]


def _logsumexp(a: np.ndarray) -> np.ndarray:
    peak = a.max(axis=1)
    return peak + np.log(np.exp(a - peak[:, None]).sum(axis=1))
