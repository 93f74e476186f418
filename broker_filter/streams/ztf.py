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

from broker_filter.streams.alert import Alert, DecodeError, Detection
from broker_filter.streams.columns import rows

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
    try:
        ref = 10.0 ** (-0.4 * magnr)
        diff = 10.0 ** (-0.4 * magpsf) * (1.0 if positive else -1.0)
    except OverflowError:  # a magnitude below about -770: the brighter one stands, and the limits refuse it
        return min(magpsf, magnr), math.nan, True
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


# The fields each point function takes, in order; :func:`broker_filter.streams.columns.rows` yields them.
POINT_FIELDS = ("candid", "jd", "fid", "pid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "distnr", "isdiffpos")
FORCED_FIELDS = ("jd", "fid", "pid", "forcediffimflux", "forcediffimfluxunc", "magzpsci", "magnr", "sigmagnr",
                 "distnr")


def _reference(magnr: Any, sigmagnr: Any, distnr: Any) -> tuple[float, float]:
    """(magnr, sigmagnr) when the reference source is this object, else NaNs."""
    distance = _finite(distnr)
    if math.isfinite(distance) and (distance < 0 or distance > MATCH_RADIUS_ARCSEC):
        return math.nan, math.nan
    return _finite(magnr), _finite(sigmagnr)


def apparent_magnitude(magpsf: Any, sigmapsf: Any, magnr: Any, sigmagnr: Any, distnr: Any,
                       isdiffpos: Any) -> tuple[float, float, bool]:
    """(mag, err, corrected) of one ZTF detection from its raw alert fields, as the decoder reads them.

    Values may be None or non-numeric (NaN results); see :func:`dc_magnitude`.
    """
    ref_mag, ref_err = _reference(magnr, sigmagnr, distnr)
    return dc_magnitude(_finite(magpsf), _finite(sigmapsf), ref_mag, ref_err, _is_positive(isdiffpos))


def _detection(candid: Any, jd: Any, fid: Any, pid: Any, magpsf: Any, sigmapsf: Any, magnr: Any, sigmagnr: Any,
               distnr: Any, isdiffpos: Any) -> tuple[Detection, bool]:
    """A detection from the fields of :data:`POINT_FIELDS` (``pid`` unused: ids are candids)."""
    mag, err, corrected = apparent_magnitude(magpsf, sigmapsf, magnr, sigmagnr, distnr, isdiffpos)
    det = Detection(detection_id=int(candid), time=_finite(jd) - MJD_OFFSET, band=_band(fid), mag=mag, mag_err=err)
    return det, corrected


def _synthetic_id(pid: Any, jd: Any, fid: Any, tag: int) -> int:
    """Upper limits and forced points have no candid: key them by the image's pid."""
    if isinstance(pid, int) and pid > 0:
        return -(pid * 10 + tag)
    scaled = _finite(jd) * 1e5
    step = round(scaled) if math.isfinite(scaled) else 0  # an absurd jd: the limits refuse the alert by its time
    return -((step * 10 + int(fid or 0)) * 10 + tag)


def _upper_limit(jd: Any, fid: Any, pid: Any) -> Detection:
    # positional arguments: this runs for most history points, and keywords cost a third more
    return Detection(_synthetic_id(pid, jd, fid, _LIMIT_ID_TAG), _finite(jd) - MJD_OFFSET, _band(fid),
                     math.nan, math.nan, None, None, True)


def _forced(jd: Any, fid: Any, pid: Any, forcediffimflux: Any, forcediffimfluxunc: Any, magzpsci: Any,
            magnr: Any, sigmagnr: Any, distnr: Any) -> Detection:
    """Forced photometry (fp_hists): difference flux in DN at zero point ``magzpsci``."""
    zeropoint = _finite(magzpsci)
    flux = _finite(forcediffimflux)
    flux_err = _finite(forcediffimfluxunc)
    if flux == FORCED_FLUX_MISSING:
        flux = flux_err = math.nan
    ref_mag, ref_err = _reference(magnr, sigmagnr, distnr)
    mag = err = math.nan
    if math.isfinite(ref_mag) and math.isfinite(zeropoint) and math.isfinite(flux) and abs(zeropoint - ref_mag) < 100:
        ref = 10.0 ** (0.4 * (zeropoint - ref_mag))
        total = ref + flux
        if total > 0:
            mag = zeropoint - 2.5 * math.log10(total)
            err = 1.0857 * math.hypot(flux_err, ref * ref_err / 1.0857) / total
    return Detection(detection_id=_synthetic_id(pid, jd, fid, _FORCED_ID_TAG), time=_finite(jd) - MJD_OFFSET,
                     band=_band(fid), mag=mag, mag_err=err, upper_limit=False, forced=True)


def _history(record: dict[str, Any]) -> list[Detection]:
    """prv_candidates (detections and upper limits) and fp_hists, dropping unplaceable points.

    The history comes as a list of dicts (fastavro) or as :class:`~broker_filter.streams.columns.Columns`
    (the compiled reader); :func:`~broker_filter.streams.columns.rows` gives the same tuples from both.
    """
    history: list[Detection] = []
    for point in rows(record.get("prv_candidates"), POINT_FIELDS):
        candid, jd, fid, pid = point[:4]
        if not math.isfinite(_finite(jd)):
            continue
        history.append(_upper_limit(jd, fid, pid) if candid is None else _detection(*point)[0])
    for point in rows(record.get("fp_hists"), FORCED_FIELDS):
        if math.isfinite(_finite(point[0])):
            history.append(_forced(*point))
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
    trigger, corrected = _detection(*(candidate.get(name) for name in POINT_FIELDS))
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
