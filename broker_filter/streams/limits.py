"""Physical validation of decoded alerts: what no real survey sends becomes a dead letter with a reason.

A well-formed Avro record can still carry values that no telescope produced: an MJD of 10^12
or below zero, a magnitude of -1000, an object id of 450 KB, a band name of a megabyte. Held,
they would be scored as stars (and flagged novel), or make our output records larger than the
brokers accept. Each limit below has its own reason code (:class:`~broker_filter.streams.alert.DecodeError`),
counted by the daemon's dead-letter metric and documented in docs/RELIABILITY.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from broker_filter.streams.alert import Alert, DecodeError

UNIX_EPOCH_MJD = 40587.0
SECONDS_PER_DAY = 86400.0


def mjd_now() -> float:
    return UNIX_EPOCH_MJD + time.time() / SECONDS_PER_DAY


@dataclass(frozen=True)
class AlertLimits:
    """The ``[limits]`` section: what an alert may hold.

    ``min_mjd``: the earliest observation time accepted (40,000 is 1968, before any digital
    survey; archival photometry older than that is not an alert stream); ``future_days``: how
    far past the wall clock an observation time may lie (clock skew between survey and us);
    ``min_mag``/``max_mag``: the magnitudes of real detections (fluxes are checked through the
    magnitudes they give); ``max_id_chars``: the object id (ZTF's are 12 characters, Rubin's
    up to 20); ``max_band_chars``: a band name; ``max_decoded_bytes``: what one Avro block may
    inflate to (a compressed block is cut off there, not inflated whole: a 36 KB bzip2 block
    can hold 12 GiB).
    """

    min_mjd: float = 40_000.0
    future_days: float = 1.0
    min_mag: float = -5.0
    max_mag: float = 40.0
    max_id_chars: int = 256
    max_band_chars: int = 16
    max_decoded_bytes: int = 64 * 1024 * 1024

    def check(self, alert: Alert, now_mjd: float | None = None) -> Alert:
        """``alert`` unchanged, or a DecodeError naming the first limit it breaks."""
        if len(alert.object_id) > self.max_id_chars:
            raise DecodeError("too_long", f"object id of {len(alert.object_id)} characters > {self.max_id_chars}")
        latest = (mjd_now() if now_mjd is None else now_mjd) + self.future_days
        times = [det.time for det in alert.detections]
        if times and not (self.min_mjd <= min(times) and max(times) <= latest):
            bad = next(t for t in times if not self.min_mjd <= t <= latest)
            raise DecodeError("time_out_of_range", f"observation time MJD {bad!r} outside [{self.min_mjd:g}, now + {self.future_days:g} d]")
        for det in alert.detections:
            if len(det.band) > self.max_band_chars:
                raise DecodeError("too_long", f"band name of {len(det.band)} characters > {self.max_band_chars}")
            if math.isfinite(det.mag) and not self.min_mag <= det.mag <= self.max_mag:
                raise DecodeError("magnitude_out_of_range", f"magnitude {det.mag!r} outside [{self.min_mag:g}, {self.max_mag:g}]")
        return alert
