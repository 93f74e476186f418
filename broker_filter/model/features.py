"""Preprocessing: light curves -> fixed-shape RNN inputs. Training and serving share this code.

The daemon scores live objects with exactly these steps, so that a served light curve
looks to the network like a trained one (the paper's model is only as good as this
agreement). The steps, after Naul et al. (2018) and Tsang & Schultz (2019):

1. Band choice: light curves whose band is not in ``PreprocessConfig.bands`` are skipped.
   Non-finite points and non-positive errors are dropped.
2. Chunks: each light curve is cut into consecutive chunks of ``n_max`` points; a last
   chunk shorter than ``n_max`` is kept if it has at least ``n_min`` points. A light curve
   shorter than ``n_max`` (a live object) is one short chunk; batches are padded to the
   longest chunk and carry ``lengths`` so that the network masks the padding.
3. Period: the catalogue period (if ``use_catalogue_period`` and the light curve has one)
   or the estimate of :func:`broker_filter.model.period.estimate_periods` over the whole light curve, the
   same estimator serving uses (streams carry no catalogue periods).
4. Phase folding (``period_fold``): times become phases in [0, 1) from the chunk's first
   point, and points are sorted by phase. Without folding, times are days since the
   chunk's first point.
5. Lags: the RNN reads differences of consecutive (phase or) times, 0 for the first point.
6. Centring and scaling per chunk: magnitudes minus the chunk mean, divided by the chunk
   standard deviation (floored at ``min_scale``). The mean, the scale and log10 of the
   period are the chunk's three "supports", fed to the estimation network.
7. Error weights: ``1 / max(mag_err, min_error)`` normalised to mean 1 over each chunk's
   points (0 at padding), so that precise points dominate the reconstruction loss and
   every chunk counts equally.

Everything after the period estimate is vectorised numpy over the whole batch
(:func:`prepare_batch`, the training reference). Serving repeats steps 4-6 in torch on the
device (:func:`prepare_chunks`, on chunks cut by the same :func:`chunk_layout`): equal to
the reference within float32 rounding (tests/model/test_features_torch.py), and it lets a
served batch cross to the GPU as raw points (16 bytes a point) instead of padded inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from broker_filter.model.lightcurve import LightCurve

if TYPE_CHECKING:
    import torch

#: Bands the default model reads: ASAS-3/ASAS-SN V, SDSS g r i, ZTF g and r (``R`` in the
#: project's light-curve table, ``r`` in decoded alerts) and Rubin g r i.
DEFAULT_BANDS = ("V", "g", "r", "R", "i")

INPUT_FEATURES = ("lag", "scaled_mag")
SUPPORT_FEATURES = ("mean_mag", "scale", "log10_period")


class PreprocessError(ValueError):
    """Inputs that preprocessing cannot use (e.g. a period array of the wrong length)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """The preprocessing constants a bundle records, so that serving repeats training exactly.

    ``n_min``/``n_max``: chunk sizes (points). ``period_fold``: fold by the period.
    ``bands``: bands read (None: all). ``use_catalogue_period``: prefer a light curve's
    catalogue period to the estimate (off by default: live alerts never carry one, and a
    model trained on catalogue periods would see differently-folded inputs when serving).
    ``min_error`` (mag): error floor for the weights. ``min_scale`` (mag): floor of the
    per-chunk standard deviation, so that a flat chunk does not divide by zero.
    """

    n_min: int = 20
    n_max: int = 200
    period_fold: bool = True
    bands: tuple[str, ...] | None = DEFAULT_BANDS
    use_catalogue_period: bool = False
    min_error: float = 0.005
    min_scale: float = 0.001

    def __post_init__(self) -> None:
        if not 1 <= self.n_min <= self.n_max:
            raise PreprocessError(f"need 1 <= n_min <= n_max, got n_min={self.n_min}, n_max={self.n_max}")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        if self.min_error <= 0 or self.min_scale <= 0:
            raise PreprocessError("min_error and min_scale must be positive")

    def accepts(self, band: str) -> bool:
        return self.bands is None or band in self.bands

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bands"] = None if self.bands is None else list(self.bands)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> PreprocessConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PreprocessError(f"unknown preprocessing keys {sorted(unknown)}")
        values = dict(data)
        if values.get("bands") is not None:
            values["bands"] = tuple(values["bands"])
        return cls(**values)


@dataclass
class PreparedBatch:
    """Network-ready arrays for a batch of chunks (N chunks, padded to T points).

    ``inputs`` (N, T, 2) float32: [lag, scaled magnitude] per point, zeros at padding.
    ``weights`` (N, T) float32: reconstruction-loss weights, 0 at padding.
    ``lengths`` (N,) int64: points per chunk (>= n_min), padding starts there.
    ``supports`` (N, 3) float32: [mean magnitude, scale, log10 period] per chunk.
    ``owner`` (N,) int64: index, in the list given to :func:`prepare_batch`, of the light
    curve each chunk was cut from. ``periods`` (L,) float64: the period used for each of
    those L light curves (NaN for skipped ones).
    """

    inputs: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    supports: np.ndarray
    owner: np.ndarray
    periods: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.size)

    @property
    def mask(self) -> np.ndarray:
        """(N, T) bool, True on real points."""
        return np.arange(self.inputs.shape[1])[None, :] < self.lengths[:, None]

    def take(self, index: np.ndarray) -> PreparedBatch:
        """The chunks at ``index`` (owner and periods keep referring to the original list)."""
        return PreparedBatch(
            self.inputs[index], self.weights[index], self.lengths[index], self.supports[index], self.owner[index], self.periods
        )


def chunk_counts(lengths: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """How many chunks each light curve of ``lengths`` points yields (vectorised)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return lengths // cfg.n_max + (lengths % cfg.n_max >= cfg.n_min)


def chunk_layout(
    lc_lengths: np.ndarray, cfg: PreprocessConfig, lc_start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the chunks of light curves lie in their concatenated points.

    ``lc_lengths`` (L,): usable points of each curve; ``lc_start`` (L,): where each curve's
    points begin (default: one curve after another). Returns, per chunk, the curve it was
    cut from, its first point and its length (all int64): the cut of :func:`prepare_batch`,
    shared with the serving path so that both cut alike.
    """
    lc_lengths = np.asarray(lc_lengths, dtype=np.int64)
    counts = chunk_counts(lc_lengths, cfg)
    n_chunks = int(counts.sum())
    chunk_lc = np.repeat(np.arange(lc_lengths.size), counts)
    k = np.arange(n_chunks) - np.repeat(np.cumsum(counts) - counts, counts)
    if lc_start is None:
        lc_start = np.cumsum(lc_lengths) - lc_lengths
    start = lc_start[chunk_lc] + k * cfg.n_max
    lengths = np.minimum(cfg.n_max, lc_lengths[chunk_lc] - k * cfg.n_max)
    return chunk_lc, start, lengths


def chunk(lc: LightCurve, cfg: PreprocessConfig) -> list[LightCurve]:
    """The chunks of one light curve (same cut as :func:`prepare_batch`), as light curves."""
    lc = lc.cleaned()
    pieces = []
    for k in range(int(chunk_counts(np.array([len(lc)]), cfg)[0])):
        part = slice(k * cfg.n_max, min((k + 1) * cfg.n_max, len(lc)))
        pieces.append(LightCurve(lc.object_id, lc.band, lc.time[part], lc.mag[part], lc.mag_err[part], lc.period, lc.label, lc.source))
    return pieces


def resolve_periods(lcs: Sequence[LightCurve], cfg: PreprocessConfig, device: str | None = None) -> np.ndarray:
    """The period each light curve is folded with: catalogue (if configured) or estimated.

    Estimation runs once over the whole light curve (batched, see
    :func:`broker_filter.model.period.estimate_periods`), on ``device`` (None: CUDA when present). A light curve without a usable period (too few
    points, estimator failure) gets its time span, i.e. it is treated as one cycle; its
    log10-period support then says "long", which is what such a curve looks like.
    """
    periods = np.full(len(lcs), np.nan)
    if cfg.use_catalogue_period:
        periods[:] = [lc.period if lc.period is not None else np.nan for lc in lcs]
    todo = np.flatnonzero(~np.isfinite(periods))
    if todo.size:
        from broker_filter.model.period import estimate_periods

        cleaned = [lcs[i].cleaned() for i in todo]
        periods[todo] = estimate_periods([c.time for c in cleaned], [c.mag for c in cleaned], [c.mag_err for c in cleaned],
                                         device=device)
    bad = ~(np.isfinite(periods) & (periods > 0))
    if bad.any():
        spans = np.array([np.ptp(lcs[i].time) if len(lcs[i]) else 0.0 for i in np.flatnonzero(bad)])
        periods[bad] = np.where(spans > 0, spans, 1.0)
    return periods


def prepare_batch(
    lcs: Sequence[LightCurve],
    cfg: PreprocessConfig,
    periods: np.ndarray | Sequence[float] | None = None,
    *,
    pad_to: int | None = None,
) -> PreparedBatch:
    """Cut, fold, centre and scale ``lcs`` into one padded batch of chunks.

    ``periods`` (one per light curve) skips the period step (training estimates them once
    and reuses them every epoch; serving may estimate them on the GPU). ``pad_to`` pads
    the time axis to a fixed T >= the longest chunk (fixed shapes for compiled models);
    by default T is the longest chunk. Light curves yielding no chunk (wrong band, fewer
    than ``n_min`` usable points) simply own no row.
    """
    flat_t, flat_m, flat_e, lc_lengths, selected = _flatten(lcs, cfg)
    counts = chunk_counts(lc_lengths, cfg)
    used = counts > 0
    all_periods = np.full(len(lcs), np.nan)
    if periods is not None:
        periods = np.asarray(periods, dtype=np.float64)
        if periods.shape != (len(lcs),):
            raise PreprocessError(f"periods must have one value per light curve ({len(lcs)}), got shape {periods.shape}")
        all_periods[selected[used]] = periods[selected[used]]
    elif used.any():
        all_periods[selected[used]] = resolve_periods([lcs[i] for i in selected[used]], cfg)
    n_chunks = int(counts.sum())
    if n_chunks == 0:
        return _empty_batch(pad_to or 0, all_periods)

    chunk_lc, start, lengths = chunk_layout(lc_lengths, cfg)
    width = max(pad_to or 0, int(lengths.max()))

    mask = np.arange(width)[None, :] < lengths[:, None]
    source = np.where(mask, start[:, None] + np.arange(width)[None, :], 0)
    t, m, e = flat_t[source], flat_m[source], flat_e[source]
    period = all_periods[selected[chunk_lc]]

    x = t - t[:, :1]
    if cfg.period_fold:
        x = np.mod(x / period[:, None], 1.0)
        order = np.argsort(np.where(mask, x, np.inf), axis=1, kind="stable")
        x, m, e = (np.take_along_axis(a, order, axis=1) for a in (x, m, e))
    lag = np.diff(x, axis=1, prepend=x[:, :1])
    lag[~mask] = 0.0

    n = lengths.astype(np.float64)
    mean = np.where(mask, m, 0.0).sum(axis=1) / n
    centred = np.where(mask, m - mean[:, None], 0.0)
    scale = np.maximum(np.sqrt((centred**2).sum(axis=1) / n), cfg.min_scale)
    weight = np.where(mask, 1.0 / np.maximum(e, cfg.min_error), 0.0)
    weight /= (weight.sum(axis=1) / n)[:, None]

    inputs = np.stack([lag, centred / scale[:, None]], axis=-1).astype(np.float32)
    supports = np.stack([mean, scale, np.log10(period)], axis=1).astype(np.float32)
    return PreparedBatch(inputs, weight.astype(np.float32), lengths.astype(np.int64), supports, selected[chunk_lc], all_periods)


def _flatten(lcs: Sequence[LightCurve], cfg: PreprocessConfig):
    """Concatenate the usable points of the accepted light curves, each sorted by time."""
    selected = np.array([i for i, lc in enumerate(lcs) if cfg.accepts(lc.band)], dtype=np.int64)
    if selected.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, np.zeros(0, dtype=np.int64), selected
    parts = [lcs[i] for i in selected]
    sizes = np.array([len(lc) for lc in parts], dtype=np.int64)
    t = np.concatenate([np.asarray(lc.time, dtype=np.float64) for lc in parts])
    m = np.concatenate([np.asarray(lc.mag, dtype=np.float64) for lc in parts])
    e = np.concatenate([np.asarray(lc.mag_err, dtype=np.float64) for lc in parts])
    owner = np.repeat(np.arange(selected.size), sizes)
    good = np.isfinite(t) & np.isfinite(m) & np.isfinite(e) & (e > 0)
    if not good.all():
        t, m, e, owner = t[good], m[good], e[good], owner[good]
    if t.size > 1 and np.any((np.diff(t) < 0) & (owner[1:] == owner[:-1])):
        order = np.lexsort((t, owner))
        t, m, e = t[order], m[order], e[order]
    return t, m, e, np.bincount(owner, minlength=selected.size).astype(np.int64), selected


def _empty_batch(width: int, periods: np.ndarray) -> PreparedBatch:
    return PreparedBatch(
        np.zeros((0, width, 2), np.float32),
        np.zeros((0, width), np.float32),
        np.zeros(0, np.int64),
        np.zeros((0, 3), np.float32),
        np.zeros(0, np.int64),
        periods,
    )


@dataclass
class ChunkTensors:
    """Network inputs for N chunks made by :func:`prepare_chunks` (on any torch device).

    ``inputs`` (N, W, 2) float32 [lag, scaled magnitude], zeros at padding; ``lengths``
    (N,) int64; ``supports`` (N, 3) float32 [mean magnitude, scale, log10 period]. The
    loss weights of :class:`PreparedBatch` are left out: scoring does not use them.
    """

    inputs: torch.Tensor
    lengths: torch.Tensor
    supports: torch.Tensor


def prepare_chunks(
    time: torch.Tensor,
    mag: torch.Tensor,
    start: torch.Tensor,
    lengths: torch.Tensor,
    period: torch.Tensor,
    width: int,
    cfg: PreprocessConfig,
) -> ChunkTensors:
    """Steps 4-6 of :func:`prepare_batch` in torch, for chunks already cut by :func:`chunk_layout`.

    ``time`` (P,) float64 and ``mag`` (P,) (any float dtype) are clean, time-sorted points
    of consecutive light curves; chunk ``i`` is points ``start[i] : start[i] + lengths[i]``,
    folded with ``period[i]`` (float64). ``width`` >= the longest chunk. Phases, means and
    scales are computed in float64 as in the reference (MJD times need it), then rounded
    to float32. Nothing here waits for the device (no data-dependent shapes), so a served
    batch is queued on the GPU without a host round trip.
    """
    import torch

    steps = torch.arange(width, device=time.device)
    mask = steps[None, :] < lengths[:, None]
    source = torch.where(mask, start[:, None] + steps[None, :], start[:, None])
    t = time[source]
    m = mag[source].double()
    x = t - t[:, :1]
    if cfg.period_fold:
        x = torch.remainder(x / period[:, None], 1.0)
        x, order = torch.sort(torch.where(mask, x, torch.inf), dim=1, stable=True)
        m = torch.gather(m, 1, order)
    lag = torch.where(mask, torch.diff(x, dim=1, prepend=x[:, :1]), 0.0)
    n = lengths.double()
    mean = torch.where(mask, m, 0.0).sum(dim=1) / n
    centred = torch.where(mask, m - mean[:, None], 0.0)
    scale = torch.sqrt((centred * centred).sum(dim=1) / n).clamp_min(cfg.min_scale)
    inputs = torch.stack([lag, centred / scale[:, None]], dim=-1).float()
    supports = torch.stack([mean, scale, torch.log10(period)], dim=1).float()
    return ChunkTensors(inputs, lengths, supports)
