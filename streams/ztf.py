"""ZTF alert records (schemas 3.x and 4.x, also as re-published by brokers) to :class:`Alert`.

ZTF's ``magpsf`` is the magnitude of the *difference* image: for a variable star it is the
change against the reference image, not the star's brightness. The apparent ("DC")
magnitude adds the reference flux back (``magnr``, the nearest reference-image source,
when it lies within :data:`MATCH_RADIUS_ARCSEC`), with the sign from ``isdiffpos`` — the
formula the ZTF brokers (ALeRCE, Fink, Lasair) use. Without a reference source the
difference flux is the whole flux (a new transient) and ``magpsf`` stands.
"""

from __future__ import annotations

import math
from typing import Any

from streams.alert import Alert, DecodeError, Detection

BANDS = {1: "g", 2: "r", 3: "i"}
MATCH_RADIUS_ARCSEC = 1.5
MJD_OFFSET = 2400000.5
FORCED_FLUX_MISSING = -99999.0
_FORCED_ID_TAG = 1  # synthetic ids: -(pid * 10 + tag), never equal to a real (positive) candid
_LIMIT_ID_TAG = 2


def _finite(value: Any) -> float:
    """A float, or NaN for null / non-numeric values."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def dc_magnitude(magpsf: float, sigmapsf: float, magnr: float, sigmagnr: float,
                 positive: bool) -> tuple[float, float, bool]:
    """Apparent magnitude and error from difference + reference photometry.

    Returns (mag, err, corrected): ``corrected`` is False when no reference source was
    usable and ``magpsf`` was returned as is (or NaN for a negative difference).
    """
    if not (math.isfinite(magnr) and math.isfinite(sigmagnr)):
        if positive:
            return magpsf, sigmapsf, False
        return math.nan, math.nan, False
    ref = 10.0 ** (-0.4 * magnr)
    diff = 10.0 ** (-0.4 * magpsf) * (1.0 if positive else -1.0)
    total = ref + diff
    if not total > 0:
        return math.nan, math.nan, True
    err = math.hypot(ref * sigmagnr, diff * sigmapsf) / total
    return -2.5 * math.log10(total), err, True


def _is_positive(isdiffpos: Any) -> bool:
    return str(isdiffpos).lower() in ("t", "1", "true")


def _band(fid: Any) -> str:
    band = BANDS.get(fid) if isinstance(fid, int) else None
    if band is None:
        raise DecodeError("invalid_value", f"ZTF filter id {fid!r} is not 1, 2 or 3")
    return band


def _reference(point: dict[str, Any]) -> tuple[float, float]:
    """(magnr, sigmagnr) when the reference source is this object, else NaNs."""
    distnr = _finite(point.get("distnr"))
    if math.isfinite(distnr) and (distnr < 0 or distnr > MATCH_RADIUS_ARCSEC):
        return math.nan, math.nan
    return _finite(point.get("magnr")), _finite(point.get("sigmagnr"))


def _detection(point: dict[str, Any]) -> tuple[Detection, bool]:
    magnr, sigmagnr = _reference(point)
    mag, err, corrected = dc_magnitude(_finite(point.get("magpsf")), _finite(point.get("sigmapsf")),
                                       magnr, sigmagnr, _is_positive(point.get("isdiffpos")))
    det = Detection(detection_id=int(point["candid"]), time=_finite(point.get("jd")) - MJD_OFFSET,
                    band=_band(point.get("fid")), mag=mag, mag_err=err)
    return det, corrected


def _synthetic_id(point: dict[str, Any], tag: int) -> int:
    """Upper limits and forced points have no candid: key them by the image's pid."""
    pid = point.get("pid")
    if isinstance(pid, int) and pid > 0:
        return -(pid * 10 + tag)
    jd = _finite(point.get("jd"))
    return -((round(jd * 1e5) * 10 + int(point.get("fid") or 0)) * 10 + tag)


def _upper_limit(point: dict[str, Any]) -> Detection:
    return Detection(detection_id=_synthetic_id(point, _LIMIT_ID_TAG), time=_finite(point.get("jd")) - MJD_OFFSET,
                     band=_band(point.get("fid")), mag=math.nan, mag_err=math.nan,
                     upper_limit=True)


def _forced(point: dict[str, Any]) -> Detection:
    """Forced photometry (fp_hists): difference flux in DN at zero point ``magzpsci``."""
    zeropoint = _finite(point.get("magzpsci"))
    flux = _finite(point.get("forcediffimflux"))
    flux_err = _finite(point.get("forcediffimfluxunc"))
    if flux == FORCED_FLUX_MISSING:
        flux = flux_err = math.nan
    magnr, sigmagnr = _reference(point)
    mag = err = math.nan
    if math.isfinite(magnr) and math.isfinite(zeropoint) and math.isfinite(flux):
        ref = 10.0 ** (0.4 * (zeropoint - magnr))
        total = ref + flux
        if total > 0:
            mag = zeropoint - 2.5 * math.log10(total)
            err = 1.0857 * math.hypot(flux_err, ref * sigmagnr / 1.0857) / total
    return Detection(detection_id=_synthetic_id(point, _FORCED_ID_TAG), time=_finite(point.get("jd")) - MJD_OFFSET,
                     band=_band(point.get("fid")), mag=mag, mag_err=err, upper_limit=False, forced=True)


def _history(record: dict[str, Any]) -> list[Detection]:
    """prv_candidates (detections and upper limits) and fp_hists, dropping unplaceable points."""
    history: list[Detection] = []
    for point in record.get("prv_candidates") or ():
        if not isinstance(point, dict) or not math.isfinite(_finite(point.get("jd"))):
            continue
        if point.get("candid") is None:
            history.append(_upper_limit(point))
        else:
            history.append(_detection(point)[0])
    for point in record.get("fp_hists") or ():
        if isinstance(point, dict) and math.isfinite(_finite(point.get("jd"))):
            history.append(_forced(point))
    return history


def to_alert(record: dict[str, Any], version: str) -> Alert:
    """Build the Alert; raises DecodeError for a record that cannot make one."""
    candidate = record.get("candidate")
    object_id = record.get("objectId")
    if not isinstance(candidate, dict) or not object_id:
        raise DecodeError("missing_field", "ZTF alert without objectId or candidate")
    for name in ("candid", "jd", "fid", "magpsf", "sigmapsf"):
        if candidate.get(name) is None:
            raise DecodeError("missing_field", f"ZTF candidate without {name}")
    if not math.isfinite(_finite(candidate["jd"])):
        raise DecodeError("invalid_value", "ZTF candidate jd is not finite")
    if not (math.isfinite(_finite(candidate["magpsf"])) and math.isfinite(_finite(candidate["sigmapsf"]))):
        raise DecodeError("invalid_value", "ZTF candidate magpsf or sigmapsf is NaN")
    trigger, corrected = _detection(candidate)
    detections = {trigger.detection_id: trigger}
    for det in _history(record):
        detections.setdefault(det.detection_id, det)
    alert_id = record.get("candid") if record.get("candid") is not None else trigger.detection_id
    return Alert(
        object_id=str(object_id),
        alert_id=int(alert_id),
        survey="ztf",
        schema_version=str(record.get("schemavsn") or version),
        trigger_id=trigger.detection_id,
        detections=tuple(sorted(detections.values(), key=lambda d: (d.time, d.detection_id))),
        ra=_finite(candidate.get("ra")),
        dec=_finite(candidate.get("dec")),
        extra={"dc_corrected": corrected, "publisher": record.get("publisher")},
    )
