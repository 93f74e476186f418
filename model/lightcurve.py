"""The light-curve type, apart from the loaders in :mod:`model.data`.

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
    :class:`model.classes.ClassMapping`; ``source`` names the archive.
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
