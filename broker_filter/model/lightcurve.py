"""The light-curve type, apart from the loaders in :mod:`broker_filter.model.data`.

Preprocessing and serving need only this type; keeping it here means they (and every
command's start-up) do not import pandas, which only the archive loaders use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """A light-curve file or table that cannot be read; the message names the file and why."""


@dataclass
class LightCurve:
    """One object's photometry in one band.

    ``time`` is MJD (float64, sorted ascending), ``mag``/``mag_err`` are magnitudes with
    1-sigma errors (same length). ``period`` (days) is a catalogue period where the archive
    gives one (None otherwise: the preprocessing estimates it). ``label`` is the survey's
    own class name (e.g. ``RR_Lyrae_FM``), mapped to the model's classes by
    :class:`broker_filter.model.classes.ClassMapping`; ``source`` names the archive.
    """

    object_id: str
    band: str
    time: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    period: float | None = None
    label: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=np.float64)
        self.mag = np.asarray(self.mag, dtype=np.float64)
        self.mag_err = np.asarray(self.mag_err, dtype=np.float64)
        if not (self.time.shape == self.mag.shape == self.mag_err.shape) or self.time.ndim != 1:
            raise DataError(
                f"{self.object_id}/{self.band}: time, mag and mag_err must be 1-d arrays of one length, "
                f"got {self.time.shape}, {self.mag.shape}, {self.mag_err.shape}"
            )
        if self.period is not None and not (math.isfinite(self.period) and self.period > 0):
            self.period = None

    def __len__(self) -> int:
        return int(self.time.size)

    def cleaned(self) -> LightCurve:
        """A copy sorted by time, without non-finite points or non-positive errors."""
        keep = np.isfinite(self.time) & np.isfinite(self.mag) & np.isfinite(self.mag_err) & (self.mag_err > 0)
        order = np.argsort(self.time[keep], kind="stable")
        return LightCurve(
            self.object_id,
            self.band,
            self.time[keep][order],
            self.mag[keep][order],
            self.mag_err[keep][order],
            self.period,
            self.label,
            self.source,
        )


def first_detections(curves: tuple[LightCurve, ...] | list[LightCurve], n: int) -> tuple[LightCurve, ...]:
    """One object's curves as an alert stream shows them after its first ``n`` detections.

    All bands are merged in time order and cut after the n-th detection; bands with no
    detection yet are left out. Evaluation by number of points and the novelty
    calibration both see young objects this way, so they measure what the daemon serves.
    """
    times = np.concatenate([curve.time for curve in curves])
    cutoff = np.sort(times, kind="stable")[min(n, times.size) - 1]
    kept, budget = [], n
    for curve in curves:
        keep = min(int(np.searchsorted(curve.time, cutoff, side="right")), budget)
        budget -= keep
        if keep:
            kept.append(LightCurve(curve.object_id, curve.band, curve.time[:keep], curve.mag[:keep],
                                   curve.mag_err[:keep], curve.period, curve.label, curve.source))
    return tuple(kept)


def first_appearance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``values`` in order of first appearance, and each value's position among them.

    Objects are numbered this way wherever curves or chunks are grouped by object (the
    batch's object table, serving's result rows, :func:`broker_filter.model.scores.combine_chunks`), so
    that every scorer returns objects in the order they were given.
    """
    unique, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return unique[order], rank[inverse.reshape(-1)].astype(np.int64)


@dataclass(frozen=True)
class LightCurveBatch:
    """Many light curves in flat columns: the served input, built without a Python loop per curve.

    A list of :class:`LightCurve` costs one Python object and three arrays per curve, and
    every consumer then loops over it; an Arrow/Parquet table or the daemon's state holds
    the same data as columns. This type is those columns, so that serving copies them to
    the device as a few contiguous arrays:

    * ``time`` (P,) float64 MJD (float64: phases of day-scale periods over decades of MJD
      need it), ``mag`` and ``mag_err`` (P,) float32, the points of all curves one after
      another;
    * ``offsets`` (L+1,) int64: curve ``i`` is points ``offsets[i]:offsets[i+1]``;
    * ``band`` (L,) str, ``object_index`` (L,) int64 into ``object_ids`` (M,) str (an
      object has one curve per band, or several light curves as the daemon chooses).

    Points of a curve need not be sorted or clean: :meth:`cleaned` drops non-finite points
    and non-positive errors and sorts by time, as :meth:`LightCurve.cleaned` does.
    """

    time: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    offsets: np.ndarray
    band: np.ndarray
    object_index: np.ndarray
    object_ids: np.ndarray

    def __post_init__(self) -> None:
        points = self.time.shape
        if self.time.ndim != 1 or self.mag.shape != points or self.mag_err.shape != points:
            raise DataError(f"time, mag and mag_err must be 1-d of one length, got {self.time.shape}, {self.mag.shape}, {self.mag_err.shape}")
        if self.time.dtype != np.float64 or self.mag.dtype != np.float32 or self.mag_err.dtype != np.float32:
            raise DataError(f"need float64 time and float32 mag/mag_err, got {self.time.dtype}, {self.mag.dtype}, {self.mag_err.dtype}")
        n = self.band.shape[0] if self.band.ndim == 1 else -1
        if self.offsets.shape != (n + 1,) or self.object_index.shape != (n,):
            raise DataError(f"offsets must be (L+1,) and band, object_index (L,), got {self.offsets.shape}, {self.band.shape}, {self.object_index.shape}")
        if self.offsets[0] != 0 or self.offsets[-1] != points[0] or np.any(np.diff(self.offsets) < 0):
            raise DataError("offsets must start at 0, end at the number of points and never decrease")
        if n and (self.object_index.min() < 0 or self.object_index.max() >= len(self.object_ids)):
            raise DataError(f"object_index must lie in [0, {len(self.object_ids)})")

    def __len__(self) -> int:
        return int(self.band.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """(L,) points per curve."""
        return np.diff(self.offsets)

    @classmethod
    def from_arrays(
        cls,
        time: np.ndarray,
        mag: np.ndarray,
        mag_err: np.ndarray,
        lengths: np.ndarray,
        band: np.ndarray,
        object_ids: np.ndarray,
    ) -> LightCurveBatch:
        """From flat point columns, points per curve and one object id per curve (e.g. an Arrow table's columns).

        Curves of one object id become one object; objects are numbered in first-appearance order.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        ids, object_index = first_appearance(np.asarray(object_ids))
        return cls(
            np.ascontiguousarray(time, dtype=np.float64),
            np.ascontiguousarray(mag, dtype=np.float32),
            np.ascontiguousarray(mag_err, dtype=np.float32),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.asarray(band, dtype=str),
            object_index,
            ids.astype(object),
        )

    @classmethod
    def from_lightcurves(cls, lcs: list[LightCurve]) -> LightCurveBatch:
        """The columns of ``lcs`` (one pass to concatenate; curves of one object_id share an object)."""
        if not lcs:
            return cls.from_arrays(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, str), np.zeros(0, object))
        ids: dict[str, int] = {}
        object_index = np.fromiter((ids.setdefault(lc.object_id, len(ids)) for lc in lcs), dtype=np.int64, count=len(lcs))
        return cls(
            np.concatenate([lc.time for lc in lcs]),
            np.concatenate([lc.mag for lc in lcs]).astype(np.float32),
            np.concatenate([lc.mag_err for lc in lcs]).astype(np.float32),
            np.concatenate([[0], np.cumsum([len(lc) for lc in lcs])]).astype(np.int64),
            np.array([lc.band for lc in lcs], dtype=str),
            object_index,
            np.array(list(ids), dtype=object),
        )

    def curve(self, i: int) -> LightCurve:
        """Curve ``i`` as a :class:`LightCurve` (float32 magnitudes widened to float64)."""
        part = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return LightCurve(str(self.object_ids[self.object_index[i]]), str(self.band[i]), self.time[part], self.mag[part], self.mag_err[part])

    def to_lightcurves(self) -> list[LightCurve]:
        return [self.curve(i) for i in range(len(self))]

    def cleaned(self) -> LightCurveBatch:
        """Without non-finite points or non-positive errors, each curve sorted by time (``self`` if already so).

        Vectorised over all points. The common case (clean, sorted) costs four reductions and
        one comparison pass: a sum is finite exactly when every term is (barring overflow,
        which only sends a batch down the general path).
        """
        if self._is_clean():
            return self
        good = np.isfinite(self.time) & np.isfinite(self.mag) & np.isfinite(self.mag_err) & (self.mag_err > 0)
        owner = np.repeat(np.arange(len(self)), self.lengths)[good]
        keep = np.flatnonzero(good)
        keep = keep[np.lexsort((self.time[keep], owner))]
        counts = np.bincount(owner, minlength=len(self))
        return LightCurveBatch(
            self.time[keep], self.mag[keep], self.mag_err[keep], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.band, self.object_index, self.object_ids,
        )

    def _is_clean(self) -> bool:
        if not self.time.size:
            return True
        if not (np.isfinite(self.time.sum()) and np.isfinite(self.mag.sum(dtype=np.float64))
                and np.isfinite(self.mag_err.sum(dtype=np.float64)) and self.mag_err.min() > 0):
            return False
        steps_back = np.flatnonzero(self.time[1:] < self.time[:-1]) + 1
        return bool(np.isin(steps_back, self.offsets).all())
