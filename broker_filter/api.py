"""The classifier as a library: a broker calls it from its own code, without our daemon.

A broker already holds its objects' light curves (Fink and ALeRCE in their databases, AMPEL in
its T1 documents); it needs a function from those points to a class, probabilities and a
novelty flag. :class:`Classifier` is that function, with the daemon's semantics: the same
bundle, the same served period rule, the same calibrated probabilities, novelty p-values and
per-length novelty cuts, the same choice of bands. A row of :meth:`Classifier.classify` equals
the classification record the daemon publishes for the same points (tested).

Input is one long table, the shape brokers keep light curves in: one row per detection with
``object_id``, ``time`` (MJD), ``band``, ``mag`` and ``mag_err``; fluxes in nJy (``flux``,
``flux_err``, Rubin's unit) may stand in for magnitudes, and an optional ``period`` (days)
skips the period search for that object and band. :func:`from_ztf` and :func:`from_rubin`
build that table from the surveys' own alert fields, with the decoder's conversions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from broker_filter.model.lightcurve import LightCurve
from broker_filter.streams import rubin, ztf

REQUIRED = ("object_id", "time", "band")
JD_LOOKING = 2_400_000.0  # an MJD column above this is a Julian Date: today's MJD is ~61,000

__all__ = ["Classifier", "from_rubin", "from_ztf"]


class Classifier:
    """A model bundle ready to classify light-curve tables; see :meth:`load` and :meth:`classify`.

    ``novelty_threshold`` ("p95" or "p80") sets the ``novel`` column as the daemon's
    ``[scoring] novelty_threshold`` does; ``min_points`` is the daemon's ``[scoring]
    min_points``: a band is scored once it holds that many usable points (never fewer than
    the bundle's chunk minimum).
    """

    def __init__(self, bundle, device: str = "auto", *, novelty_threshold: Literal["p80", "p95"] = "p95",
                 min_points: int = 20, mixed_precision: bool = True) -> None:
        from broker_filter.model.serving import Scorer

        if novelty_threshold not in ("p80", "p95"):
            raise ValueError(f"novelty_threshold must be 'p80' or 'p95', got {novelty_threshold!r}")
        self.bundle = bundle
        self.scorer = Scorer(bundle, device=device, mixed_precision=mixed_precision)
        self.novelty_threshold = novelty_threshold
        self.points_needed = max(int(min_points), bundle.preprocess.n_min)

    @classmethod
    def load(cls, bundle: str | Path | None = None, device: str = "auto", **options: Any) -> Classifier:
        """Load and verify a bundle directory (None: the packaged default) on ``device`` ("auto": CUDA if present)."""
        from broker_filter.model.bundle import ModelBundle, resolve_device

        resolved = resolve_device(device)
        return cls(ModelBundle.load(bundle, device=resolved), device=str(resolved), **options)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.bundle.class_names)

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    def close(self) -> None:
        """Stop the scorer's worker threads."""
        self.scorer.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def classify(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per object of ``frame``, in first-appearance order.

        Columns: ``object_id``, ``scored`` (False when no band the model reads holds enough
        usable points: the other columns are then empty), ``top_class``, ``prob_<class>``
        for each class (calibrated), ``energy``, ``novelty_p_value``, ``novel``,
        ``novelty_threshold_energy`` (the cut at this number of points), ``n_points`` (in the
        bands used), ``bands_used``, ``bundle_id``. Rows that are not usable points (NaN,
        non-positive error, negative flux) are ignored, as the daemon ignores them.
        """
        curves, given = self._curves(_points(frame))
        object_ids = list(dict.fromkeys(frame["object_id"].astype(str)))
        scores = {score.object_id: score for score in self._score(curves, given)} if curves else {}
        bands = {}
        for lc in curves:
            bands.setdefault(lc.object_id, []).append(lc.band)
        return pd.DataFrame([self._row(oid, scores.get(oid), tuple(bands.get(oid, ()))) for oid in object_ids],
                            columns=self._columns())

    # -- internals ----------------------------------------------------------------------

    def _curves(self, points: pd.DataFrame) -> tuple[list[LightCurve], np.ndarray]:
        """The curves the daemon would score: bands the model reads, with enough usable points."""
        cfg = self.bundle.preprocess
        by_object: dict[str, list[tuple[LightCurve, float]]] = {}
        for (object_id, band), group in points.groupby(["object_id", "band"], sort=False):
            if not cfg.accepts(band) or len(group) < self.points_needed:
                continue
            curve = LightCurve(object_id, band, group["time"].to_numpy(), group["mag"].to_numpy(), group["mag_err"].to_numpy())
            given = group["period"].to_numpy(dtype=float) if "period" in group else np.array([np.nan])
            finite = given[np.isfinite(given) & (given > 0)]
            by_object.setdefault(object_id, []).append((curve.cleaned(), finite[0] if finite.size else np.nan))
        # the daemon's order: objects as they come, each object's bands sorted by name
        ordered = [item for items in by_object.values() for item in sorted(items, key=lambda item: item[0].band)]
        return [curve for curve, _ in ordered], np.array([period for _, period in ordered], dtype=float)

    def _score(self, curves: list[LightCurve], given: np.ndarray) -> list:
        from broker_filter.model.period_schedule import scheduled_periods

        periods = given.copy()
        todo = np.flatnonzero(~np.isfinite(periods))
        if todo.size:
            periods[todo] = scheduled_periods([curves[i] for i in todo], self.bundle.preprocess, self.scorer.estimate_periods)
        return self.scorer.score(curves, periods)

    def _columns(self) -> list[str]:
        return ["object_id", "scored", "top_class", *(f"prob_{name}" for name in self.class_names), "energy",
                "novelty_p_value", "novel", "novelty_threshold_energy", "n_points", "bands_used", "bundle_id"]

    def _row(self, object_id: str, score, bands: tuple[str, ...]) -> dict[str, Any]:
        row: dict[str, Any] = {"object_id": object_id, "scored": score is not None, "bundle_id": self.bundle_id}
        if score is None:
            return {**row, "bands_used": ()}
        return {
            **row,
            "top_class": score.top_class,
            **{f"prob_{name}": float(score.probs[name]) for name in self.class_names},
            "energy": float(score.energy),
            "novelty_p_value": score.p_value,
            "novel": bool(score.novel[self.novelty_threshold]),
            "novelty_threshold_energy": self.bundle.novelty_cut(score.n_points, self.novelty_threshold),
            "n_points": int(score.n_points),
            "bands_used": bands,
        }


def _points(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's usable points, ``mag``/``mag_err`` filled from nJy fluxes where missing; a clear error otherwise."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"classify takes a pandas DataFrame, got {type(frame).__name__}")
    missing = [name for name in REQUIRED if name not in frame]
    has_mag, has_flux = {"mag", "mag_err"} <= set(frame), {"flux", "flux_err"} <= set(frame)
    if not (has_mag or has_flux):
        missing.append("mag and mag_err (or flux and flux_err in nJy)")
    if missing:
        raise ValueError(f"the light-curve frame lacks columns: {', '.join(missing)}")
    time = _numbers(frame, "time")
    if time.size and np.nanmedian(time) > JD_LOOKING:
        raise ValueError("time must be MJD, and these values look like Julian Dates: subtract 2400000.5 (from_ztf does)")
    mag = _numbers(frame, "mag") if has_mag else np.full(len(frame), np.nan)
    err = _numbers(frame, "mag_err") if has_mag else np.full(len(frame), np.nan)
    if has_flux:
        fill = np.flatnonzero(~np.isfinite(mag))
        flux, flux_err = _numbers(frame, "flux"), _numbers(frame, "flux_err")
        for i in fill:
            mag[i], err[i] = rubin.flux_to_mag(flux[i], flux_err[i])
    points = pd.DataFrame({"object_id": frame["object_id"].astype(str).to_numpy(), "band": frame["band"].astype(str).to_numpy(),
                           "time": time, "mag": mag, "mag_err": err})
    if "period" in frame:
        points["period"] = _numbers(frame, "period")
    usable = np.isfinite(time) & np.isfinite(mag) & np.isfinite(err) & (err > 0)
    return points[usable]


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 (a copy), non-numbers as NaN."""
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan).copy()


def from_ztf(jd: Sequence[float], fid: Sequence[int], magpsf: Sequence[float], sigmapsf: Sequence[float],
             magnr: Sequence[float] | None = None, sigmagnr: Sequence[float] | None = None,
             isdiffpos: Sequence[Any] | None = None, *, distnr: Sequence[float] | None = None,
             object_id: str | Sequence[str] = "object") -> pd.DataFrame:
    """A light-curve frame from ZTF's alert fields (a candidate and its ``prv_candidates``, or Fink's ``c*`` columns).

    Times become MJD; ``fid`` 1/2/3 become bands g/r/i; magnitudes become apparent ("DC")
    magnitudes with the reference source added back when ``magnr`` is given (ZTF's ``magpsf``
    measures the difference image), exactly as our decoder does. Upper limits (no ``magpsf``)
    come out NaN and are ignored by :meth:`Classifier.classify`.
    """
    n = len(jd)
    nothing = [None] * n
    columns = [magpsf, sigmapsf, magnr if magnr is not None else nothing, sigmagnr if sigmagnr is not None else nothing,
               distnr if distnr is not None else nothing, isdiffpos if isdiffpos is not None else ["t"] * n]
    if any(len(column) != n for column in (fid, *columns)):
        raise ValueError("from_ztf: every column must have one value per detection")
    converted = [ztf.apparent_magnitude(*values)[:2] for values in zip(*columns)]
    mag, err = (np.array(part, dtype=float) for part in zip(*converted)) if converted else (np.zeros(0), np.zeros(0))
    bands = [ztf.BANDS.get(int(f)) if f is not None else None for f in fid]
    if any(band is None for band in bands):
        raise ValueError(f"from_ztf: filter ids must be 1, 2 or 3, got {sorted({f for f, b in zip(fid, bands) if b is None})}")
    return pd.DataFrame({"object_id": _ids(object_id, n), "time": np.asarray(jd, dtype=float) - ztf.MJD_OFFSET,
                         "band": bands, "mag": mag, "mag_err": err})


def from_rubin(mjd: Sequence[float], band: Sequence[str], flux: Sequence[float], flux_err: Sequence[float], *,
               object_id: str | Sequence[str] = "object") -> pd.DataFrame:
    """A light-curve frame from Rubin's diaSource fields (``midpointMjdTai``, ``band``, and
    ``scienceFlux``/``scienceFluxErr`` in nJy, as our decoder prefers them, or ``psfFlux``).

    Magnitudes are AB (``31.4 - 2.5 log10(flux)``); non-positive fluxes are ignored by
    :meth:`Classifier.classify`.
    """
    n = len(mjd)
    if not (len(band) == len(flux) == len(flux_err) == n):
        raise ValueError("from_rubin: every column must have one value per detection")
    return pd.DataFrame({"object_id": _ids(object_id, n), "time": np.asarray(mjd, dtype=float),
                         "band": [str(b) for b in band], "flux": np.asarray(flux, dtype=float),
                         "flux_err": np.asarray(flux_err, dtype=float)})


def _ids(object_id: str | Sequence[str], n: int) -> list[str]:
    if isinstance(object_id, str):
        return [object_id] * n
    if len(object_id) != n:
        raise ValueError("object_id must be one id or one per detection")
    return [str(i) for i in object_id]
