"""``broker-filter bench period``: our batched Lomb-Scargle against astropy's, same curves, same grid.

Two questions, both on real light curves from ``data/lightcurves``:

* speed: periods per second for 200-point light curves (consecutive 200-point windows of
  the ASAS-3 light curves, the size of one model chunk), ours on the device present
  against astropy ``LombScargle(...).power(method="fast")`` (its fastest exact-grid
  method, the same Press & Rybicki algorithm) in one process, and astropy spread over
  every core with a process pool;
* agreement: the fraction of light curves where both find the same best frequency (within
  one grid step), over a random sample of the 200-point windows and one of whole ASAS-3
  and Stripe 82 light curves (every band).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from broker_filter_proving import REPO
from broker_filter_proving.bench.report import BenchResult

DATA_DIR = REPO / "data" / "lightcurves"
SOURCES = ("asas3_richards2012", "sdss_s82_rrlyrae_sesar2010")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="lightcurves.parquet + objects.csv folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--points", type=int, default=200, help="points per light curve in the speed test")
    parser.add_argument("--windows", type=int, default=None, help="use only this many windows (default: all)")
    parser.add_argument("--copies", type=int, default=1, help="repeat the window set this many times (fills a GPU)")
    parser.add_argument("--astropy-timed", type=int, default=24, help="windows astropy is timed on in one process")
    parser.add_argument("--whole-curves", type=int, default=300, help="whole light curves in the agreement sample")
    parser.add_argument("--astropy-windows", type=int, default=480, help="windows in astropy's pool (agreement sample)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for astropy's pool")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of ours (median reported)")
    parser.add_argument("--min-period", type=float, default=None, help="days (default: broker_filter.model.period's)")
    parser.add_argument("--max-period", type=float, default=None, help="days (default: broker_filter.model.period's)")


def run(args: argparse.Namespace) -> BenchResult:
    from broker_filter.model.data import load_lightcurve_table
    from broker_filter.model.period import DEFAULT_MAX_PERIOD, DEFAULT_MIN_PERIOD

    search = {
        "min_period": args.min_period or DEFAULT_MIN_PERIOD,
        "max_period": args.max_period or DEFAULT_MAX_PERIOD,
    }
    lcs = load_lightcurve_table(args.data, sources=SOURCES)
    windows = _windows([lc for lc in lcs if lc.source == SOURCES[0]], args.points)[: args.windows]
    rng = np.random.default_rng(0)
    whole = [lcs[i] for i in rng.permutation(len(lcs))[: args.whole_curves]]

    ours_rate, ours_windows, device = _time_ours(windows * args.copies, search, args)
    ours_windows = ours_windows[: len(windows)]
    timed = [windows[i] for i in rng.permutation(len(windows))[: args.astropy_timed]]
    _progress(f"ours: {ours_rate:.1f} periods/s on {device}")
    astropy_rate = _time_astropy_serial(timed, search)
    _progress(f"astropy, 1 process: {astropy_rate:.2f} periods/s")
    sampled = rng.permutation(len(windows))[: args.astropy_windows]
    pool_rate, astropy_windows = _astropy_pool([windows[i] for i in sampled], search, args.workers)
    _progress(f"astropy pool: {pool_rate:.1f} periods/s")
    _, ours_whole, _ = _time_ours(whole, search, args, repeats=1)
    _, astropy_whole = _astropy_pool(whole, search, args.workers)

    agree_windows = _agreement([windows[i] for i in sampled], ours_windows[sampled], astropy_windows, search)
    agree_whole = _agreement(whole, ours_whole, astropy_whole, search)
    rows = [
        [f"ours ({device})", len(windows) * args.copies, ours_rate, ours_rate / astropy_rate],
        ["astropy fast, 1 process", len(timed), astropy_rate, 1.0],
        [f"astropy fast, {args.workers} processes", len(sampled), pool_rate, pool_rate / astropy_rate],
    ]
    if device.startswith("cpu"):  # the CPU path is nifty-ls: time our torch path beside it, same curves
        torch_rate, torch_windows, _ = _time_ours(windows * args.copies, search, args, method="torch")
        _, torch_whole, _ = _time_ours(whole, search, args, repeats=1, method="torch")
        rows.append([f"our torch path ({device})", len(windows) * args.copies, torch_rate, torch_rate / astropy_rate])
        same = int(np.sum(np.isclose(torch_windows[: len(windows)], ours_windows, rtol=1e-9, equal_nan=True)))
        same_whole = int(np.sum(np.isclose(torch_whole, ours_whole, rtol=1e-9, equal_nan=True)))
        rows[0][0] = f"ours: nifty-ls ({device})"
        cpu_note = (f"nifty-ls against our torch path on the CPU: {ours_rate / torch_rate:.2f}x on the windows; the same period on "
                    f"{same}/{len(windows)} windows and {same_whole}/{len(whole)} whole light curves")
    notes = [
        f"{args.points}-point light curves: {len(windows)} consecutive windows of {len({w[0] for w in windows})} ASAS-3 V light curves",
        f"grid: {search['min_period']} d to {search['max_period']} d, 5 points per peak width (broker_filter.model.period docstring)",
        f"same best frequency (within one grid step) as astropy: {agree_windows[0]}/{agree_windows[1]} windows "
        f"({100 * agree_windows[0] / max(1, agree_windows[1]):.2f}%), {agree_whole[0]}/{agree_whole[1]} whole light "
        f"curves of ASAS-3 and Stripe 82 ({100 * agree_whole[0] / max(1, agree_whole[1]):.2f}%)",
        f"ours against astropy on all {args.workers} cores: {ours_rate / pool_rate:.1f}x",
    ]
    if device.startswith("cpu"):
        notes.append(cpu_note)
    return BenchResult(
        name="period",
        columns=["estimator", "light curves", "periods/s", "x astropy (1 process)"],
        rows=rows,
        speedup=ours_rate / astropy_rate,
        notes=notes,
        extra={
            "search": search,
            "points": args.points,
            "agreement_windows": list(agree_windows),
            "agreement_whole": list(agree_whole),
            "device": device,
        },
    )


def _progress(message: str) -> None:
    """A line on stderr as each measurement ends (the table comes last)."""
    import sys

    print(message, file=sys.stderr, flush=True)


Window = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (object id, time, mag, mag_err)


def _windows(lcs, points: int) -> list[Window]:
    """Consecutive, non-overlapping ``points``-point pieces of each light curve."""
    out = []
    for lc in lcs:
        for start in range(0, len(lc) - points + 1, points):
            part = slice(start, start + points)
            out.append((lc.object_id, lc.time[part], lc.mag[part], lc.mag_err[part]))
    return out


def _as_arrays(curves) -> tuple[list, list, list]:
    if curves and isinstance(curves[0], tuple):
        return [c[1] for c in curves], [c[2] for c in curves], [c[3] for c in curves]
    return [c.time for c in curves], [c.mag for c in curves], [c.mag_err for c in curves]


def _time_ours(curves, search: dict, args: argparse.Namespace, repeats: int | None = None, method: str = "auto"):
    """Median periods/s of :func:`broker_filter.model.period.best_frequencies` (after one warm-up call)."""
    import torch

    from broker_filter.model.period import best_frequencies

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device))
    t, y, e = _as_arrays(curves)
    peaks = best_frequencies(t, y, e, device=device, method=method, **search)  # warm-up: CUDA context, cuFFT plans
    rates = []
    for _ in range(repeats or args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        peaks = best_frequencies(t, y, e, device=device, method=method, **search)
        rates.append(len(curves) / (time.perf_counter() - start))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return statistics.median(rates), peaks.frequency, name


def _astropy_best(curve, search: dict) -> float:
    """astropy's best frequency on our grid for one light curve (runs in pool workers too)."""
    from astropy.timeseries import LombScargle

    from broker_filter.model.period import frequency_grid

    t, y, e = curve
    keep = np.isfinite(t) & np.isfinite(y) & np.isfinite(e) & (e > 0)
    t, y, e = t[keep], y[keep], e[keep]
    if t.size < 5 or np.ptp(t) <= 0:
        return float("nan")
    grid = frequency_grid(float(np.ptp(t)), **search)
    power = LombScargle(t, y, e).power(grid.frequencies, method="fast", assume_regular_frequency=True)
    return float(grid.frequencies[np.argmax(power)])


def _time_astropy_serial(curves, search: dict) -> float:
    t, y, e = _as_arrays(curves)
    start = time.perf_counter()
    for curve in zip(t, y, e):
        _astropy_best(curve, search)
    return len(curves) / (time.perf_counter() - start)


def _astropy_pool(curves, search: dict, workers: int) -> tuple[float, np.ndarray]:
    t, y, e = _as_arrays(curves)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        best = list(pool.map(_astropy_best, zip(t, y, e), [search] * len(t), chunksize=4))
    return len(curves) / (time.perf_counter() - start), np.array(best)


def _agreement(curves, ours: np.ndarray, theirs: np.ndarray, search: dict) -> tuple[int, int]:
    """(same best frequency within one grid step, curves where astropy found one)."""
    from broker_filter.model.period import frequency_grid

    t, _, _ = _as_arrays(curves)
    same = total = 0
    for ti, f_ours, f_theirs in zip(t, ours, theirs):
        if not np.isfinite(f_theirs):
            continue
        total += 1
        step = frequency_grid(float(np.ptp(ti)), **search).df
        same += bool(np.isfinite(f_ours) and abs(f_ours - f_theirs) <= 1.01 * step)
    return same, total
