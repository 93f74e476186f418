"""Rubin alert records (lsst.v7 to v11, also as re-published by brokers) to :class:`Alert`.

Rubin measures fluxes in nJy; the AB magnitude is ``-2.5 log10(flux) + 31.4``. A
diaSource's ``psfFlux`` is measured on the *difference* image (it is negative when the
star is fainter than the template), so the light curve of a variable star uses
``scienceFlux`` — the forced PSF flux on the direct visit image, present from lsst.v8 —
and falls back to ``psfFlux`` in older schemas. ``Detection.flux`` holds the flux the
magnitude came from.
"""

from __future__ import annotations

import math
from typing import Any

from broker_filter.streams.alert import Alert, DecodeError, Detection
from broker_filter.streams.columns import rows
from broker_filter.streams.ztf import _finite

AB_ZEROPOINT_NJY = 31.4


def flux_to_mag(flux: float, flux_err: float) -> tuple[float, float]:
    """AB magnitude and error from an nJy flux; NaN for a non-positive flux."""
    if not (math.isfinite(flux) and flux > 0):
        return math.nan, math.nan
    return -2.5 * math.log10(flux) + AB_ZEROPOINT_NJY, 1.0857362047581294 * abs(flux_err) / flux


def _flux(source: dict[str, Any]) -> tuple[float, float]:
    return _pick_flux(source.get("scienceFlux"), source.get("scienceFluxErr"), source.get("psfFlux"),
                      source.get("psfFluxErr"))


def _pick_flux(science: Any, science_err: Any, psf: Any, psf_err: Any) -> tuple[float, float]:
    if science is not None:
        return _finite(science), _finite(science_err)
    return _finite(psf), _finite(psf_err)


# The fields :func:`_detection` takes after the id, in order; :func:`broker_filter.streams.columns.rows` yields them.
SOURCE_FIELDS = ("midpointMjdTai", "band", "scienceFlux", "scienceFluxErr", "psfFlux", "psfFluxErr")


def _detection(detection_id: Any, midpoint: Any, band: Any, science: Any, science_err: Any, psf: Any,
               psf_err: Any, forced: bool) -> Detection | None:
    """A detection from a source's id and :data:`SOURCE_FIELDS`; None if it cannot be placed."""
    time = _finite(midpoint)
    if detection_id is None or not math.isfinite(time) or not band:
        return None
    flux, flux_err = _pick_flux(science, science_err, psf, psf_err)
    mag, err = flux_to_mag(flux, flux_err)
    return Detection(detection_id=int(detection_id), time=time, band=str(band), mag=mag, mag_err=err,
                     flux=flux, flux_err=flux_err, forced=forced)


def _history(items: Any, id_field: str, forced: bool) -> list[Detection]:
    """prvDiaSources or prvDiaForcedSources (list of dicts or Columns), unplaceable ones dropped."""
    found = (_detection(*point, forced) for point in rows(items, (id_field, *SOURCE_FIELDS)))
    return [det for det in found if det is not None]


def _object_id(record: dict[str, Any], source: dict[str, Any]) -> str:
    """diaObjectId, or for a solar-system source without one, ``ss`` + ssObjectId."""
    obj = record.get("diaObject") or {}
    for candidate in (obj.get("diaObjectId"), source.get("diaObjectId")):
        if candidate:
            return str(candidate)
    if source.get("ssObjectId"):
        return f"ss{source['ssObjectId']}"
    raise DecodeError("missing_field", "Rubin alert has neither diaObjectId nor ssObjectId")


def to_alert(record: dict[str, Any], version: str) -> Alert:
    """Build the Alert; raises DecodeError for a record that cannot make one."""
    source = record.get("diaSource")
    if not isinstance(source, dict):
        raise DecodeError("missing_field", "Rubin alert without diaSource")
    for name in ("diaSourceId", "midpointMjdTai", "band"):
        if source.get(name) is None or source.get(name) == "":  # an empty band names no filter
            raise DecodeError("missing_field", f"Rubin diaSource without {name}")
    flux, _ = _flux(source)
    if not math.isfinite(flux) or not math.isfinite(_finite(source["midpointMjdTai"])):
        raise DecodeError("invalid_value", "Rubin diaSource flux or time is NaN")
    trigger = _detection(source.get("diaSourceId"), *(source.get(name) for name in SOURCE_FIELDS), forced=False)
    assert trigger is not None  # the required fields were checked above
    detections = {trigger.detection_id: trigger}
    for det in _history(record.get("prvDiaSources"), "diaSourceId", forced=False):
        detections.setdefault(det.detection_id, det)
    for det in _history(record.get("prvDiaForcedSources"), "diaForcedSourceId", forced=True):
        detections.setdefault(det.detection_id, det)
    alert_id = record.get("alertId", record.get("diaSourceId"))
    obj = record.get("diaObject") or {}
    return Alert(
        object_id=_object_id(record, source),
        alert_id=int(alert_id if alert_id is not None else trigger.detection_id),
        survey="lsst",
        schema_version=str(record.get("lsst_schema_version") or version),
        trigger_id=trigger.detection_id,
        detections=tuple(sorted(detections.values(), key=lambda d: (d.time, d.detection_id))),
        ra=_finite(source.get("ra")),
        dec=_finite(source.get("dec")),
        extra={"diaObjectId": obj.get("diaObjectId") or source.get("diaObjectId"),
               "ssObjectId": source.get("ssObjectId") or None},
    )
