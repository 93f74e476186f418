"""The period a served light curve is folded with: estimated on a prefix that grows by 25% steps.

Why: the period search (:mod:`broker_filter.model.period`) is the costliest step of scoring, and its cost
grows with the light curve's time span. Re-running it on the whole light curve at every
alert of a live object made it ~80% of the daemon's CPU time (docs/BENCHMARKS.md, "e2e").
Keeping "the object's last period" in the daemon would make a record depend on what the
daemon happened to remember (restarts, crashes, evictions, batching, Kafka vs replay), and
records must be a function of the alert and the detections before it. So the period is a
pure function of the as-of light curve that is cheap to remember:

* the light curve (one band, its usable points sorted by time, :meth:`LightCurve.cleaned`)
  has ``n`` points; the *schedule* is ``n_min, then each step + max(1, step // 4)``
  (integer x1.25: 20, 25, 31, 38, 47, 58, 72, 90, ... for ``n_min = 20``);
* ``N_k`` is the largest step of the schedule ``<= n``; the period is the one the training
  estimator (:func:`broker_filter.model.features.resolve_periods`) gives for the **first N_k points**.

Between two steps the prefix does not change, so a memo keyed by ``(object, band)`` and
checked against ``N_k`` and a digest of the prefix (:func:`prefix_digest`) answers without
a search; a lost memo only costs the search again, never a different period. A late
detection that lands inside the prefix, or points dropped from the front by the state's
bound, change the digest and so the period is searched again.

What it means scientifically: the period of a live light curve is refreshed each time the
curve has grown by 25%, from at least the first 80% of its points; all points are folded
with it. An object is searched ~20 times between 20 and 2,000 points instead of at every
alert. Training curves are folded with the whole-curve estimate; for a live curve the
prefix covers >= 80% of the points, so served inputs stay close to trained ones.

Both the daemon (:mod:`broker_filter.periods`, with the memo) and the offline reference the
tests compare it with (:func:`scheduled_periods`) use these functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from broker_filter.model.features import PreprocessConfig, resolve_periods
from broker_filter.model.lightcurve import LightCurve

#: Digest size (bytes) of a prefix's points: collisions are out of reach at 128 bits.
DIGEST_BYTES = 16


def next_step(step: int) -> int:
    """The schedule's step after ``step``: x1.25 in integers (at least one point more)."""
    return step + max(1, step // 4)


def period_points(n: int, n_min: int) -> int:
    """``N_k``: the largest schedule step (starting at ``n_min``) ``<= n``; 0 when ``n < n_min``."""
    if n < n_min:
        return 0
    step = n_min
    while (following := next_step(step)) <= n:
        step = following
    return step


def period_prefix(lc: LightCurve, n_min: int) -> LightCurve | None:
    """The first ``N_k`` usable points of ``lc`` in time order (None below ``n_min`` usable points)."""
    cleaned = lc if _is_clean(lc) else lc.cleaned()  # the daemon's curves are: no copy then
    k = period_points(len(cleaned), n_min)
    if k == 0:
        return None
    if k == len(cleaned):
        return cleaned
    return LightCurve(cleaned.object_id, cleaned.band, cleaned.time[:k], cleaned.mag[:k], cleaned.mag_err[:k],
                      cleaned.period, cleaned.label, cleaned.source)


def _is_clean(lc: LightCurve) -> bool:
    """Whether ``lc.cleaned()`` would return the same points (all usable, times ascending)."""
    return bool(
        np.isfinite(lc.time).all() and np.isfinite(lc.mag).all() and (lc.mag_err > 0).all()
        and np.isfinite(lc.mag_err).all() and (lc.time[1:] >= lc.time[:-1]).all()
    )


def prefix_digest(prefix: LightCurve) -> bytes:
    """A digest of the prefix's times, magnitudes and errors: equal digests, equal periods."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for column in (prefix.time, prefix.mag, prefix.mag_err):
        digest.update(np.ascontiguousarray(column, dtype="<f8").data)
    return digest.digest()


def scheduled_periods(
    lcs: Sequence[LightCurve],
    cfg: PreprocessConfig,
    estimate: Callable[[list[LightCurve]], np.ndarray] | None = None,
) -> np.ndarray:
    """The period each light curve is folded with under the rule (no memo: the reference).

    NaN for light curves that yield no chunk (band not read, fewer than ``n_min`` usable
    points); give the result to ``Scorer.score(lcs, periods)`` or ``prepare_batch``.
    ``estimate`` runs the search on the prefixes (default :func:`resolve_periods`, as in
    training; the daemon passes ``Scorer.estimate_periods``, the same estimator batched).
    """
    periods = np.full(len(lcs), np.nan)
    found = [(i, period_prefix(lc, cfg.n_min)) for i, lc in enumerate(lcs) if cfg.accepts(lc.band)]
    found = [(i, prefix) for i, prefix in found if prefix is not None]
    if found:
        search = estimate or (lambda prefixes: resolve_periods(prefixes, cfg))
        periods[[i for i, _ in found]] = search([prefix for _, prefix in found])
    return periods
