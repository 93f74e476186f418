"""The typed alert that every source yields, whatever the survey or schema version.

Downstream code (state, preprocessing) sees only this shape: one object, one alert id,
and the detections the packet carries (the triggering one plus its history), each with
its own id so that merging the same detection twice is a no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Survey = Literal["ztf", "lsst"]
MAX_DETAIL_CHARS = 500


class DecodeError(Exception):
    """An input that cannot become an :class:`Alert`; ``reason`` is a short stable code.

    Sources and the daemon catch only this type: any other exception from decoding is a
    bug. ``reason`` is used as a metric label and a dead-letter header, so it comes from a
    small fixed vocabulary (see ``REASONS``); ``detail`` carries the human explanation.
    """

    REASONS = (
        "empty",
        "not_avro",
        "truncated",
        "unknown_schema",
        "schema_registry",
        "missing_field",
        "invalid_value",
        "too_large",
        "bad_schema",
        "time_out_of_range",
        "magnitude_out_of_range",
        "too_long",
        "decode_failed",
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown decode-error reason {reason!r}")
        if len(detail) > MAX_DETAIL_CHARS:  # a 600 KB schema name must not make a 600 KB log line or header
            detail = f"{detail[:MAX_DETAIL_CHARS]}... ({len(detail)} characters)"
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @classmethod
    def boundary(cls, error: Exception, reason: str = "decode_failed") -> DecodeError:
        """The DecodeError for ``error``, whatever its type: the per-message boundary.

        One message may make decoding raise anything (a RecursionError from a schema nested
        50,000 deep, an OverflowError from an absurd number, a TypeError from a schema whose
        fields are null); none of it may stop the stream, so every entry point of decoding
        turns it into a dead letter naming the exception. A DecodeError passes unchanged.
        """
        if isinstance(error, DecodeError):
            return error
        if isinstance(error, MemoryError):
            reason = "too_large"
        return cls(reason, f"{type(error).__name__}: {error}")


@dataclass(frozen=True, slots=True)
class Detection:
    """One photometric point of an object's light curve.

    ``detection_id`` is the survey's own id for the measurement (ZTF ``candid``, Rubin
    ``diaSourceId`` / ``diaForcedSourceId``): the key of idempotent merging. ``mag`` is an
    apparent (DC) magnitude for ZTF and an AB magnitude from the flux for Rubin; it is NaN
    where no magnitude can be formed (an upper limit, a non-positive forced flux).
    """

    detection_id: int
    time: float  # MJD
    band: str
    mag: float
    mag_err: float
    flux: float | None = None  # nJy (Rubin) or None (ZTF gives magnitudes)
    flux_err: float | None = None
    upper_limit: bool = False
    forced: bool = False  # forced photometry (Rubin prvDiaForcedSources, ZTF fp_hists)

    @property
    def usable(self) -> bool:
        """True for a real detection with a finite magnitude and positive error."""
        return (
            not self.upper_limit
            and math.isfinite(self.mag)
            and math.isfinite(self.mag_err)
            and self.mag_err > 0
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """One decoded alert packet, with the history it carries merged in.

    ``detections`` are sorted by time and unique by ``detection_id``; the triggering
    detection is the one whose id equals ``trigger_id``.
    """

    object_id: str
    alert_id: int
    survey: Survey
    schema_version: str
    trigger_id: int
    detections: tuple[Detection, ...]
    ra: float | None = None
    dec: float | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def trigger(self) -> Detection:
        for det in self.detections:
            if det.detection_id == self.trigger_id:
                return det
        raise LookupError(f"alert {self.alert_id} lacks its trigger detection")

    @property
    def time(self) -> float:
        """Observation time (MJD) of the triggering detection: the alert's event time."""
        return self.trigger.time
