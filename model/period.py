"""Period estimation: a batched generalised Lomb-Scargle periodogram in PyTorch.

Live alert streams carry no catalogue periods, so the period that folds a light curve is
estimated, and training estimates it the same way so that served inputs look like trained
ones. This module is that one estimator; training and serving both call
:func:`estimate_periods`.

The periodogram is the floating-mean, error-weighted Lomb-Scargle of Zechmeister & Kürster
(2009). Its trigonometric sums at every trial frequency are non-uniform FFTs: each light
curve's weighted values are spread onto a regular time grid with a Gaussian kernel,
Fourier transformed, and divided by the kernel's transform (Greengard & Lee 2004: grid
twice as fine as the highest frequency, 12 kernel taps, relative error about 1e-6). That
is Press & Rybicki's (1989) idea with an accurate kernel: their 4-point Lagrange
"extirpolation" errs by percents near the highest frequencies, enough to pick another
peak. astropy's ``method="fast"`` computes the same sums with another accurate
non-uniform FFT; the results agree to float32 precision. Here many light curves of
different lengths run together (padding with zero weight, which adds nothing to any sum),
on the GPU when there is one, in float32 with float64 only where positions need it.

Frequency grid, per light curve (documented because the grid *is* the estimator):

* trial frequencies are ``k * df`` for integers ``k`` with ``1 / max_period <= k * df <=
  1 / min_period`` (``k >= 1``);
* ``df = 1 / (oversample * baseline)``: a periodogram peak is ``1 / baseline`` wide, so
  ``oversample`` points per peak (astropy's ``samples_per_peak``, default 5) keep the
  true maximum within a fraction of a peak width of a grid point;
* the defaults, 0.03 d to 1000 d, span delta Scuti stars to Miras. The cost is set by the
  number of frequencies, ``(1/min_period) * oversample * baseline``: about 500,000 for a
  ten-year ASAS-3 or Stripe 82 light curve, 100,000 for a two-year one. The FFT method
  makes that cost ``O(n_freq log n_freq)`` per light curve (two real FFTs of about
  ``4 n_freq`` and ``8 n_freq`` points) instead of the direct
  method's ``O(n_points * n_freq)``; raising ``min_period`` to 0.1 d cuts it threefold
  for surveys that do not look for delta Scuti stars.
* frequencies on integer multiples of ``df`` keep every FFT input real (no complex shift
  by a start frequency), and the sums at twice each frequency, which the floating mean
  needs, are every other bin of the same transform.

Points with a non-finite time, magnitude or error, or a non-positive error, are dropped.
A light curve with fewer than ``min_points`` usable points, or no time span, gets a NaN
period: callers see at once that no period exists rather than receiving a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_MIN_PERIOD = 0.03  # days: delta Scuti stars
DEFAULT_MAX_PERIOD = 1000.0  # days: Miras and long secondary periods
DEFAULT_OVERSAMPLE = 5.0  # grid points per periodogram peak width (astropy's default)
DEFAULT_MIN_POINTS = 5  # fewer points cannot constrain mean, amplitude and phase
FFT_OVERSAMPLING = 4  # FFT length / highest frequency index: grid twice as fine as the highest frequency
MAX_FFT_LENGTH = 2**24  # bounds memory for very long baselines (df grows past ~30 years at defaults)
KERNEL_HALF_WIDTH = 6  # Gaussian kernel taps each side (Greengard & Lee's M_sp): ~1e-6 error
#: Gaussian kernel variance (cells^2) for a grid twice as fine as needed (Greengard & Lee's
#: tau, in grid cells: M_sp R / (4 pi (R - 1/2)) with R = 2).
KERNEL_TAU = KERNEL_HALF_WIDTH * 2 / (4 * math.pi * 1.5)
CPU_POWER_BLOCK = 1 << 17  # frequencies per pass of the power formula on CPU (cache-sized, few thread fork-joins)
DEGENERATE = 1e-6  # determinant of the (cos, sin) weighted covariance below which a frequency is unusable


@dataclass(frozen=True)
class PeriodogramPeaks:
    """The best trial frequency of each light curve, with its normalised power.

    ``power`` is astropy's "standard" normalisation (fraction of the weighted variance
    the best sinusoid explains, 0..1); NaN where no period could be estimated.
    """

    frequency: np.ndarray  # (n,) cycles per day
    power: np.ndarray  # (n,)
    n_points: np.ndarray  # (n,) usable points

    @property
    def period(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / self.frequency


@dataclass(frozen=True)
class FrequencyGrid:
    """One light curve's trial frequencies: ``df * arange(k_first, k_last + 1)``."""

    df: float
    k_first: int
    k_last: int

    @property
    def frequencies(self) -> np.ndarray:
        return self.df * np.arange(self.k_first, self.k_last + 1, dtype=np.float64)

    @property
    def fft_length(self) -> int:
        return fft_length_for(self.k_last)


def frequency_grid(
    baseline: float,
    *,
    min_period: float = DEFAULT_MIN_PERIOD,
    max_period: float = DEFAULT_MAX_PERIOD,
    oversample: float = DEFAULT_OVERSAMPLE,
) -> FrequencyGrid:
    """The trial frequencies for a light curve spanning ``baseline`` days (module docstring)."""
    _check_search(min_period, max_period, oversample)
    if not baseline > 0:
        raise ValueError(f"baseline must be positive, got {baseline}")
    df = 1.0 / (oversample * baseline)
    k_last = int(math.floor(1.0 / (min_period * df)))
    longest = MAX_FFT_LENGTH // FFT_OVERSAMPLING - 1
    if k_last > longest:  # baseline too long for the FFT budget: coarser grid, same range
        df = 1.0 / (min_period * longest)
        k_last = longest
    k_first = max(1, int(math.ceil(1.0 / (max_period * df))))
    return FrequencyGrid(df=df, k_first=k_first, k_last=max(k_first, k_last))


def estimate_periods(
    times: Sequence[np.ndarray],
    mags: Sequence[np.ndarray],
    errs: Sequence[np.ndarray] | None = None,
    *,
    min_period: float = DEFAULT_MIN_PERIOD,
    max_period: float = DEFAULT_MAX_PERIOD,
    oversample: float = DEFAULT_OVERSAMPLE,
    min_points: int = DEFAULT_MIN_POINTS,
    device: str | torch.device | None = None,
    max_cells: int | None = None,
) -> np.ndarray:
    """Best Lomb-Scargle period (days) of each light curve; NaN where there is none.

    ``errs=None`` weights all points equally. ``device=None`` uses CUDA when present.
    ``max_cells`` bounds the FFT cells processed at once (memory), by default 2**27 on
    CUDA (about 3 GB of working memory) and 2**23 on CPU.
    """
    peaks = best_frequencies(
        times,
        mags,
        errs,
        min_period=min_period,
        max_period=max_period,
        oversample=oversample,
        min_points=min_points,
        device=device,
        max_cells=max_cells,
    )
    return peaks.period


def estimate_period(t: np.ndarray, y: np.ndarray, dy: np.ndarray | None = None, **search) -> float:
    """One light curve's best period (days), NaN if it has too few usable points."""
    return float(estimate_periods([t], [y], None if dy is None else [dy], **search)[0])


def best_frequencies(
    times: Sequence[np.ndarray],
    mags: Sequence[np.ndarray],
    errs: Sequence[np.ndarray] | None = None,
    *,
    min_period: float = DEFAULT_MIN_PERIOD,
    max_period: float = DEFAULT_MAX_PERIOD,
    oversample: float = DEFAULT_OVERSAMPLE,
    min_points: int = DEFAULT_MIN_POINTS,
    device: str | torch.device | None = None,
    max_cells: int | None = None,
) -> PeriodogramPeaks:
    """The periodogram maximum of each light curve (see :func:`estimate_periods`)."""
    _check_search(min_period, max_period, oversample)
    if len(times) != len(mags) or (errs is not None and len(errs) != len(times)):
        raise ValueError("times, mags and errs must hold one array per light curve")
    dev = _resolve_device(device)
    cells = max_cells or (2**27 if dev.type == "cuda" else 2**23)
    curves = [_clean(t, y, None if errs is None else errs[i]) for i, (t, y) in enumerate(zip(times, mags))]
    n = len(curves)
    frequency = np.full(n, np.nan)
    power = np.full(n, np.nan)
    n_points = np.array([len(c[0]) for c in curves], dtype=np.int64)
    grids: dict[int, FrequencyGrid] = {}
    for i, (t, _, _) in enumerate(curves):
        if len(t) >= min_points and t[-1] > t[0]:
            grids[i] = frequency_grid(
                float(t[-1] - t[0]), min_period=min_period, max_period=max_period, oversample=oversample
            )
    for fft_length, members in _buckets(grids):
        per_chunk = max(1, cells // fft_length)
        for start in range(0, len(members), per_chunk):
            chunk = members[start : start + per_chunk]
            f, p = _peaks_of_chunk([curves[i] for i in chunk], [grids[i] for i in chunk], fft_length, dev)
            frequency[chunk] = f
            power[chunk] = p
    return PeriodogramPeaks(frequency=frequency, power=power, n_points=n_points)


def _check_search(min_period: float, max_period: float, oversample: float) -> None:
    if not 0 < min_period < max_period:
        raise ValueError(f"need 0 < min_period < max_period, got {min_period} and {max_period}")
    if not oversample > 0:
        raise ValueError(f"oversample must be positive, got {oversample}")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _clean(t: np.ndarray, y: np.ndarray, dy: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Usable points only, sorted by time, as float64 (t) and float64 weights 1/dy**2."""
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(f"a light curve needs 1-d time and magnitude arrays of one length, got {t.shape}, {y.shape}")
    if dy is None:
        w = np.ones_like(t)
    else:
        dy = np.asarray(dy, dtype=np.float64)
        if dy.shape != t.shape:
            raise ValueError(f"errors have shape {dy.shape}, times {t.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            w = 1.0 / (dy * dy)
    keep = np.isfinite(t) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    t, y, w = t[keep], y[keep], w[keep]
    order = np.argsort(t, kind="stable")
    return t[order], y[order], w[order]


def _buckets(grids: dict[int, FrequencyGrid]) -> list[tuple[int, list[int]]]:
    """Light curves grouped by FFT length (a power of two), short curves first in each."""
    groups: dict[int, list[int]] = {}
    for i, grid in grids.items():
        groups.setdefault(grid.fft_length, []).append(i)
    return sorted(groups.items())


def fft_length_for(k_last: int) -> int:
    """Smallest of 2**a times 1, 5/4, 3/2 or 7/4 that holds ``FFT_OVERSAMPLING * (k_last + 1)`` cells.

    These lengths factor into 2, 3, 5 and 7, which pocketfft and cuFFT transform at full
    speed; powers of two alone would waste up to half the cells (1.4x on average). The
    short ladder keeps light curves of similar baselines in one batched FFT.
    """
    need = FFT_OVERSAMPLING * (k_last + 1)
    base = 1 << max(3, (need - 1).bit_length() - 1)  # largest power of two below need (>= 8)
    for quarters in (4, 5, 6, 7, 8):
        if base * quarters // 4 >= need:
            return base * quarters // 4
    raise AssertionError("unreachable: 8/4 of base is 2 * base >= need")


def _peaks_of_chunk(
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    grids: list[FrequencyGrid],
    fft_length: int,
    dev: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Periodogram maxima of light curves that share one FFT length."""
    width = max(len(c[0]) for c in curves)
    t = np.zeros((len(curves), width))
    y = np.zeros((len(curves), width))
    w = np.zeros((len(curves), width))
    for row, (ti, yi, wi) in enumerate(curves):
        t[row, : len(ti)] = ti - ti[0]
        y[row, : len(ti)] = yi
        w[row, : len(ti)] = wi
    df = np.array([g.df for g in grids])
    k_first = np.array([g.k_first for g in grids])
    k_last = np.array([g.k_last for g in grids])
    frequency_index, power = periodogram_maxima(
        torch.from_numpy(t).to(dev, non_blocking=True),
        torch.from_numpy(y).to(dev, non_blocking=True),
        torch.from_numpy(w).to(dev, non_blocking=True),
        torch.from_numpy(df).to(dev),
        torch.from_numpy(k_first).to(dev),
        torch.from_numpy(k_last).to(dev),
        fft_length,
    )
    return frequency_index.cpu().numpy() * df, power.cpu().numpy().astype(np.float64)


def periodogram_maxima(
    t: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    df: torch.Tensor,
    k_first: torch.Tensor,
    k_last: torch.Tensor,
    fft_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``k`` of the best frequency ``k * df`` and its power, for a padded batch.

    ``t`` (B, N) float64 days since each curve's first point; ``y`` (B, N) magnitudes;
    ``w`` (B, N) weights, zero on padding. Trial indices run from ``k_first`` to
    ``k_last`` per row; all must be below ``fft_length / FFT_OVERSAMPLING``.
    """
    w = w / w.sum(dim=1, keepdim=True)
    y = y - (w * y).sum(dim=1, keepdim=True)
    yy = (w * y * y).sum(dim=1)
    # Sums of w*y*exp(-2 pi i f t) need frequencies up to k_last * df: a grid of fft_length
    # cells. Sums of w*exp(...) are needed at f and 2f: a grid twice as long, read at bins k and 2k.
    position = t * (fft_length * df)[:, None]  # float64: FFT cells reach 2**24
    spectrum_y = torch.fft.rfft(_spread(position, (w * y).float(), fft_length), dim=-1)
    spectrum_1 = torch.fft.rfft(_spread(2.0 * position, w.float(), 2 * fft_length), dim=-1)
    best, best_power = _best_frequency_index(spectrum_y, spectrum_1, k_first, k_last, fft_length)
    return best.double(), best_power / yy.float().clamp_min(1e-30)


def _best_frequency_index(
    spectrum_y: torch.Tensor, spectrum_1: torch.Tensor, k_first: torch.Tensor, k_last: torch.Tensor, fft_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of the power over each row's ``k_first..k_last``, in blocks of frequencies.

    On a CPU the dozen elementwise passes of the power formula run from cache when a block
    is small; a GPU takes the whole range in one block (fewer launches).
    """
    lo, hi = int(k_first.min()), int(k_last.max())
    block = hi - lo + 1 if spectrum_y.is_cuda else CPU_POWER_BLOCK
    best = torch.full_like(k_first, lo)
    best_power = torch.full((spectrum_y.shape[0],), -1.0, device=spectrum_y.device)
    for start in range(lo, hi + 1, block):
        k = torch.arange(start, min(start + block, hi + 1), device=spectrum_y.device)
        y_sums = spectrum_y[:, k] / _kernel_transform(k, fft_length)
        f_sums = spectrum_1[:, k] / _kernel_transform(k, 2 * fft_length)
        f2_sums = spectrum_1[:, 2 * k] / _kernel_transform(2 * k, 2 * fft_length)
        power = _zechmeister_kurster_power(y_sums, f_sums, f2_sums)
        power.masked_fill_((k[None, :] < k_first[:, None]) | (k[None, :] > k_last[:, None]), -1.0)
        block_power, block_best = power.max(dim=1)
        better = block_power > best_power
        best = torch.where(better, block_best + start, best)
        best_power = torch.where(better, block_power, best_power)
    return best, best_power


def _kernel_transform(k: torch.Tensor, length: int) -> torch.Tensor:
    """Fourier transform of the spreading kernel at bin ``k`` of a ``length``-cell grid."""
    return math.sqrt(4 * math.pi * KERNEL_TAU) * torch.exp(-KERNEL_TAU * (2 * math.pi / length * k.float()) ** 2)


def _spread(position: torch.Tensor, values: torch.Tensor, length: int) -> torch.Tensor:
    """A (B, length) periodic grid holding ``values`` (B, N) spread at fractional ``position`` (cells).

    Each point adds ``value * exp(-(m - position)^2 / (4 tau))`` to the 12 cells ``m``
    nearest it; the FFT of the grid divided by the kernel's transform is then the sum of
    ``value * exp(-2 pi i k position / length)`` (Greengard & Lee 2004).
    """
    rows = position.shape[0]
    taps = torch.arange(1 - KERNEL_HALF_WIDTH, KERNEL_HALF_WIDTH + 1, device=position.device)
    cell = torch.floor(position).long()[..., None] + taps  # (B, N, 12)
    distance = (cell - position[..., None]).float()
    weight = torch.exp(distance * distance * (-1.0 / (4 * KERNEL_TAU))) * values[..., None]
    flat = cell.remainder_(length) + (torch.arange(rows, device=position.device) * length).view(rows, 1, 1)
    grid = torch.zeros(rows * length, dtype=torch.float32, device=position.device)
    grid.index_add_(0, flat.reshape(-1), weight.reshape(-1))
    return grid.view(rows, length)


def _zechmeister_kurster_power(y_sums: torch.Tensor, f_sums: torch.Tensor, f2_sums: torch.Tensor) -> torch.Tensor:
    """Unnormalised floating-mean power from the complex sums ``sum w y e^{-i w t}``,
    ``sum w e^{-i w t}`` and ``sum w e^{-2 i w t}`` (each (B, K); cos = real, sin = -imag).

    With weights summing to one and the weighted mean removed from y, the best fit of
    ``a cos + b sin + c`` explains ``(SS YC^2 + CC YS^2 - 2 CS YC YS) / (CC SS - CS^2)`` of
    the weighted sum of squares (Zechmeister & Kürster 2009, eqs. 5-13, solved without
    their time shift tau: fewer operations, no square roots). Where the sine and cosine
    are nearly collinear with the constant over the sampled times (``D`` below
    ``DEGENERATE``, e.g. a frequency that puts every point at one phase), the amplitude is
    undetermined and the power is set to 0 instead of a float-rounding spike.
    """
    yc, ys = y_sums.real, -y_sums.imag
    c, s = f_sums.real, -f_sums.imag
    c2, s2 = f2_sums.real, -f2_sums.imag
    cc = 0.5 * (1 + c2) - c * c
    ss = 0.5 * (1 - c2) - s * s
    cs = 0.5 * s2 - c * s
    determinant = cc * ss - cs * cs
    explained = ss * yc * yc + cc * ys * ys - 2 * cs * yc * ys
    return torch.where(determinant > DEGENERATE, explained / determinant, torch.zeros_like(explained))
