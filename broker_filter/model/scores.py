"""Per-object results: how chunk outputs are combined into one score per object.

An object can yield several chunks (a long light curve, or several bands). Its class
probabilities are the softmax of the mean chunk log-probabilities (a normalised
geometric mean: chunks vote in log space, as independent evidence would), divided by the
bundle's calibrated temperature, and its energy is the mean chunk energy. Both means are
weighted by chunk length, so that a 20-point leftover chunk does not weigh as much as a
200-point one. Novelty: a p-value among held-out known-class objects at the same number
of points, of the energy combined with the uncertainty of the class probabilities
(:mod:`broker_filter.model.calibration`); a bundle without a
calibration compares the energy with percentiles of training energies instead. Both the reference scorer
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

from broker_filter.model.calibration import Calibration, novel_flags
from broker_filter.model.lightcurve import first_appearance

if TYPE_CHECKING:
    import torch

THRESHOLD_KEYS = ("p80", "p95")


@dataclass(frozen=True)
class ObjectScore:
    """One object's classification and novelty verdict.

    ``probs``: class name -> probability (sums to 1). ``energy``: mean chunk energy (higher
    means less like any known class). ``p_value``: share of held-out known-class energies
    at this number of points at least as high (None for an uncalibrated bundle).
    ``novel``: {"p80": p_value <= 0.20, "p95": p_value <= 0.05} (uncalibrated: energy above
    the 80th/95th percentile of training energies). ``n_points``/``n_chunks``: points and
    chunks that went into the score (over all its bands).
    """

    object_id: str
    probs: dict[str, float]
    top_class: str
    energy: float
    n_points: int
    n_chunks: int
    novel: dict[str, bool]
    p_value: float | None = None

    def to_dict(self) -> dict:
        return {
            "object_id": self.object_id,
            "probs": dict(self.probs),
            "top_class": self.top_class,
            "energy": self.energy,
            "n_points": self.n_points,
            "n_chunks": self.n_chunks,
            "novel": dict(self.novel),
            "p_value": self.p_value,
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
    """Group chunks by object id (first-appearance order); length-weighted mean log-probs (renormalised) and energy."""
    ids, group = first_appearance(np.asarray(chunk_object_ids, dtype=object))
    n_objects = ids.size
    n_chunks = np.bincount(group, minlength=n_objects)
    weight = np.asarray(lengths, dtype=np.float64)
    total = np.bincount(group, weights=weight, minlength=n_objects)
    mean_log = np.zeros((n_objects, log_probs.shape[1]), dtype=np.float64)
    np.add.at(mean_log, group, np.asarray(log_probs, dtype=np.float64) * weight[:, None])
    mean_log /= total[:, None]
    mean_log -= _logsumexp(mean_log)[:, None]
    energy = np.bincount(group, weights=np.asarray(energies, dtype=np.float64) * weight, minlength=n_objects) / total
    return CombinedChunks([str(i) for i in ids], mean_log, energy, total.astype(np.int64), n_chunks)


def novelty(energy: np.ndarray, n_points: np.ndarray, thresholds: Mapping[str, float],
            calibration: Calibration | None, probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(p-values (M,) float64, NaN when uncalibrated; flags (M, 2) bool for ``THRESHOLD_KEYS``).

    ``probs``: the served (tempered) class probabilities, which a calibration that combines
    energy and uncertainty needs (:meth:`~broker_filter.model.calibration.Calibration.p_values`).
    """
    energy = np.asarray(energy, dtype=np.float64)
    if calibration is None:
        flags = np.stack([energy > thresholds[key] for key in THRESHOLD_KEYS], axis=-1).reshape(-1, len(THRESHOLD_KEYS))
        return np.full(energy.shape, np.nan), flags
    p_values = calibration.p_values(energy, n_points, probs)
    return p_values, novel_flags(p_values).reshape(-1, len(THRESHOLD_KEYS))


def calibrated_probs(log_probs: np.ndarray, calibration: Calibration | None, n_points: np.ndarray) -> np.ndarray:
    """Class probabilities from combined log-probabilities (or log of uncalibrated probabilities),
    divided by the temperature of each object's bin of points when calibrated."""
    scaled = np.asarray(log_probs, dtype=np.float64)
    if calibration is not None:
        scaled = scaled / calibration.temperature_at(n_points)[:, None]
    peak = scaled.max(axis=1, keepdims=True)
    expd = np.exp(scaled - peak)
    return expd / expd.sum(axis=1, keepdims=True)


def object_scores(combined: CombinedChunks, class_names: Sequence[str], thresholds: Mapping[str, float],
                  calibration: Calibration | None = None) -> list[ObjectScore]:
    """ObjectScore per combined object."""
    probs = calibrated_probs(combined.log_probs, calibration, combined.n_points)
    top = probs.argmax(axis=1)
    p_values, flags = novelty(combined.energy, combined.n_points, thresholds, calibration, probs)
    return [
        ObjectScore(
            object_id=object_id,
            probs={name: float(p) for name, p in zip(class_names, probs[i])},
            top_class=class_names[top[i]],
            energy=float(combined.energy[i]),
            n_points=int(combined.n_points[i]),
            n_chunks=int(combined.n_chunks[i]),
            novel={key: bool(flags[i, k]) for k, key in enumerate(THRESHOLD_KEYS)},
            p_value=None if np.isnan(p_values[i]) else float(p_values[i]),
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
    for ``THRESHOLD_KEYS``; ``p_value`` (M,) float64 novelty p-values (NaN, or None, for an
    uncalibrated bundle). Building an :class:`ObjectScore` (a dataclass and two dicts)
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
    p_value: np.ndarray | None = None

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
        p_values = [None] * len(self) if self.p_value is None else [None if p != p else p for p in self.p_value.tolist()]
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
                p_value=p_values[i],
            )
            for i in range(len(self))
        ]


def sum_chunks(rows: torch.Tensor, log_probs: torch.Tensor, energies: torch.Tensor, lengths: torch.Tensor,
               out_log: torch.Tensor, out_energy: torch.Tensor) -> None:
    """Add length-weighted chunk log-probabilities (N, K) and energies (N,) into per-object rows (float64).

    ``rows`` (N,) int64: each chunk's object row; ``lengths`` (N,): its points. The integer
    row replaces :func:`combine_chunks`'s ``np.unique`` over string ids; summing in float64
    keeps the result independent of the order in which batches arrive.
    """
    weight = lengths.to(device=out_log.device, dtype=out_log.dtype)
    out_log.index_add_(0, rows, log_probs.double() * weight[:, None])
    out_energy.index_add_(0, rows, energies.double() * weight)


def finish_objects(sum_log: torch.Tensor, sum_energy: torch.Tensor, n_points: torch.Tensor, thresholds: torch.Tensor):
    """Per-object (probs (M, K), energy (M,), novel (M, T)) from chunk sums, as :func:`combine_chunks` does.

    Length-weighted mean log-probabilities renormalised, mean energy, and the energy
    compared with each training threshold (``thresholds`` (T,) in ``THRESHOLD_KEYS`` order).
    A calibrated bundle then tempers the probabilities and replaces these flags by p-values
    on the host (:func:`calibrated_probs`, :func:`novelty`), where the points are known.
    """
    import torch

    mean_log = sum_log / n_points[:, None]
    probs = torch.exp(mean_log - torch.logsumexp(mean_log, dim=1, keepdim=True))
    energy = sum_energy / n_points
    return probs, energy, energy[:, None] > thresholds[None, :]


def _logsumexp(a: np.ndarray) -> np.ndarray:
    peak = a.max(axis=1)
    return peak + np.log(np.exp(a - peak[:, None]).sum(axis=1))
