"""Labelled alert streams from archival light curves, in the surveys' real Avro schemas.

Every detection of every selected light curve becomes one alert, written with the
official ZTF 4.02 schema or a Rubin lsst.v8+ schema, carrying the object's previous
``history_days`` of detections (ZTF sends 30 days of ``prv_candidates``, Rubin 12 months
of ``prvDiaSources``). The alerts are in observation-time order across objects, which is
how a survey emits them, and the true class of each object goes to a side file
(``labels.csv``) that the stream itself does not carry.

Photometry is inverted so that decoding gives back the light curve's magnitudes:

* ZTF: a reference magnitude ``magnr`` (the object's median in that band) plays the
  template; ``magpsf`` and ``isdiffpos`` encode the difference flux and ``sigmapsf`` is
  chosen so that the DC-magnitude error equals the light curve's error.
* Rubin: ``scienceFlux`` is the flux of the magnitude (AB, nJy) and ``psfFlux`` the
  difference from the median flux, as on a difference image.

No upper limits or forced photometry are invented: the archives hold detections only.
Bands a survey lacks are mapped (``band_map``; ASAS V -> g by default) or dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fastavro
import numpy as np
import pandas as pd

from broker_filter.streams import avro_frame
from broker_filter.streams.schema import rubin_schema, ztf_schema

SimSurvey = Literal["ztf", "lsst"]
HISTORY_DAYS = {"ztf": 30.0, "lsst": 365.0}
DEFAULT_BAND_MAP: dict[str, dict[str, str]] = {
    "ztf": {"g": "g", "r": "r", "R": "r", "i": "i", "V": "g"},
    "lsst": {"u": "u", "g": "g", "r": "r", "R": "r", "i": "i", "z": "z", "y": "y", "V": "g"},
}
ZTF_FID = {"g": 1, "r": 2, "i": 3}
MJD_OFFSET = 2400000.5
ID_STRIDE = 100_000  # detection ids: base + object index * stride + point index
ZTF_ID_BASE = 10**17
RUBIN_SOURCE_BASE = 2 * 10**17
RUBIN_OBJECT_BASE = 3 * 10**17
MIN_DIFF_FRACTION = 1e-4  # a difference flux never exactly 0 (magpsf would be infinite)
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class SimulationConfig:
    survey: SimSurvey = "ztf"
    max_objects: int | None = None
    classes: tuple[str, ...] | None = None
    seed: int = 0
    history_days: float | None = None
    band_map: dict[str, str] | None = None
    rubin_version: str = "10.0"
    alerts_per_file: int = 1000  # folder output: records per container file


@dataclass
class SimulationSummary:
    alerts: int
    objects: int
    archive: Path
    labels: Path
    dropped_points: int
    bands: dict[str, int] = field(default_factory=dict)


def labels_path(archive: Path) -> Path:
    """Where the side file of an archive lives: DIR/labels.csv or NAME.labels.csv."""
    archive = Path(archive)
    if archive.name.endswith((".tar.gz", ".tgz")):
        stem = archive.name.removesuffix(".tar.gz").removesuffix(".tgz")
        return archive.with_name(f"{stem}.labels.csv")
    return archive / LABELS_FILE


def default_value(node: Any) -> Any:
    """A schema-valid filler for a field type: null where allowed, else a zero value."""
    if isinstance(node, list):
        return None if "null" in node else default_value(node[0])
    if isinstance(node, dict):
        kind = node["type"]
        if kind == "record":
            return {f["name"]: f["default"] if "default" in f else default_value(f["type"]) for f in node["fields"]}
        if kind == "array":
            return []
        if kind == "map":
            return {}
        if kind == "enum":
            return node["symbols"][0]
        if kind == "fixed":
            return b"\x00" * node["size"]
        return default_value(kind)
    return {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0,
            "string": "", "bytes": b""}.get(node)


def _string(text: str) -> bytes:
    raw = text.encode()
    return avro_frame.write_long(len(raw)) + raw


def _null_bytes(node: Any) -> bytes | None:
    """The encoding of null for a nullable union field (None when the field is required)."""
    if isinstance(node, list) and "null" in node:
        return avro_frame.write_long(node.index("null"))
    return None


def _value_branch(node: Any) -> int:
    """The union branch that carries a value (the first non-null one); 0 for a bare type."""
    if isinstance(node, list):
        return next(i for i, branch in enumerate(node) if branch != "null")
    return 0


def _field_type(schema: dict[str, Any], name: str) -> Any:
    for fld in schema["fields"]:
        if fld["name"] == name:
            return fld["type"]
    raise KeyError(name)


def _record_type(node: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, str):
        return definitions[node]
    if isinstance(node, list):
        return _record_type(next(b for b in node if b != "null"), definitions)
    if node.get("type") == "array":
        return _record_type(node["items"], definitions)
    return node


def _definitions(schema: Any, out: dict[str, Any] | None = None, namespace: str = "") -> dict[str, Any]:
    out = {} if out is None else out
    if isinstance(schema, list):
        for branch in schema:
            _definitions(branch, out, namespace)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            out[name if "." in name else f"{ns}.{name}".lstrip(".")] = schema
            out.setdefault(name, schema)
            for fld in schema["fields"]:
                _definitions(fld["type"], out, name.rsplit(".", 1)[0] if "." in name else ns)
        elif schema.get("type") == "array":
            _definitions(schema["items"], out, namespace)
    return out


@dataclass
class _Objects:
    """The selected light curves as flat arrays, sorted by (object, time)."""

    meta: pd.DataFrame  # one row per object: object_id, source, survey_class, period, index
    obj: np.ndarray
    time: np.ndarray
    band: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray
    ref_mag: np.ndarray  # the object's median magnitude in the point's band
    dropped: int


def _load(lightcurves: Path, cfg: SimulationConfig) -> _Objects:
    objects = pd.read_csv(lightcurves / "objects.csv", dtype={"object_id": str})
    if cfg.classes:
        objects = objects[objects["survey_class"].isin(cfg.classes)]
    if cfg.max_objects is not None and len(objects) > cfg.max_objects:
        objects = objects.sample(n=cfg.max_objects, random_state=cfg.seed)
    objects = objects.sort_values("object_id").reset_index(drop=True)
    points = pd.read_parquet(lightcurves / "lightcurves.parquet")
    points = points[points["object_id"].isin(set(objects["object_id"]))]
    band_map = {**DEFAULT_BAND_MAP[cfg.survey], **(cfg.band_map or {})}
    mapped = points["band"].map(band_map)
    good = mapped.notna() & np.isfinite(points["mag"]) & np.isfinite(points["mag_err"]) & (points["mag_err"] > 0)
    dropped = int((~good).sum())
    points = points[good].assign(band=mapped[good])
    index = pd.Series(np.arange(len(objects)), index=objects["object_id"])
    points = points.assign(obj=index.loc[points["object_id"]].to_numpy())
    points = points.sort_values(["obj", "time", "band"], kind="stable")
    ref = points.groupby(["obj", "band"])["mag"].transform("median")
    objects = objects[objects.index.isin(points["obj"].unique())]
    return _Objects(objects, points["obj"].to_numpy(), points["time"].to_numpy(np.float64),
                    points["band"].to_numpy(object), points["mag"].to_numpy(np.float64),
                    points["mag_err"].to_numpy(np.float64), ref.to_numpy(np.float64), dropped)


class _Encoder:
    """Builds and encodes the alert records of one survey schema."""

    def __init__(self, cfg: SimulationConfig, data: _Objects) -> None:
        self.cfg = cfg
        self.data = data
        if cfg.survey == "ztf":
            self.schema = ztf_schema()
        else:
            if int(cfg.rubin_version.split(".")[0]) < 8:
                raise ValueError("Rubin simulation needs lsst.v8 or later (scienceFlux carries the light curve)")
            self.schema = rubin_schema(cfg.rubin_version)
        self.schema_json = json.dumps(self.schema).encode()
        self.parsed = fastavro.parse_schema(self.schema)
        defs = _definitions(self.schema)
        self._field_names = [f["name"] for f in self.schema["fields"]]
        self._null = {f["name"]: _null_bytes(f["type"]) for f in self.schema["fields"]}
        self._value_branch = {f["name"]: _value_branch(f["type"]) for f in self.schema["fields"]}
        self._encoded: dict[int, bytes] = {}
        self._encoded_objects: dict[int, bytes] = {}
        point_field = "candidate" if cfg.survey == "ztf" else "diaSource"
        point_type = _record_type(_field_type(self.schema, point_field), defs)
        self.point_template = default_value(point_type)
        self._point_schema = fastavro.parse_schema(point_type)
        if cfg.survey == "ztf":
            prv_type = _record_type(_field_type(self.schema, "prv_candidates"), defs)
            self.prv_template = default_value(prv_type)
            self._prv_schema = fastavro.parse_schema(prv_type)
        else:
            object_type = _record_type(_field_type(self.schema, "diaObject"), defs)
            self.object_template = default_value(object_type)
            self._object_schema = fastavro.parse_schema(object_type)
        rng = np.random.default_rng(cfg.seed)
        n = int(data.meta.index.max()) + 1 if len(data.meta) else 0
        self.ra = rng.uniform(0.0, 360.0, n)
        self.dec = np.degrees(np.arcsin(rng.uniform(-1.0, 0.5, n)))
        self._photometry()

    def _photometry(self) -> None:
        d = self.data
        flux = 10.0 ** (-0.4 * d.mag)
        ref = 10.0 ** (-0.4 * d.ref_mag)
        diff = flux - ref
        tiny = np.abs(diff) < MIN_DIFF_FRACTION * ref
        diff = np.where(tiny, np.where(diff >= 0, 1.0, -1.0) * MIN_DIFF_FRACTION * ref, diff)
        self.positive = diff > 0
        self.magpsf = -2.5 * np.log10(np.abs(diff))
        total = ref + diff
        # the DC error is hypot(ref*sigmagnr, |diff|*sigmapsf)/total: give the reference a
        # small share, the difference the rest, so that decoding returns mag_err exactly
        sig_total = d.mag_err * total
        self.sigmagnr = np.minimum(0.01, 0.5 * sig_total / ref)
        self.sigmapsf = np.sqrt(np.maximum(sig_total**2 - (ref * self.sigmagnr) ** 2, 0.0)) / np.abs(diff)
        self.flux_njy = 10.0 ** (-0.4 * (d.mag - 31.4))
        self.flux_err_njy = self.flux_njy * d.mag_err / 1.0857362047581294
        self.diff_njy = self.flux_njy - 10.0 ** (-0.4 * (d.ref_mag - 31.4))

    def point_id(self, row: int, base: int) -> int:
        first = self._first_row[self.data.obj[row]]
        return base + int(self.data.obj[row]) * ID_STRIDE + (row - first)

    def prepare(self) -> None:
        obj = self.data.obj
        starts = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1]])
        self._first_row = dict(zip(obj[starts].tolist(), starts.tolist()))

    def ztf_point(self, row: int, template: dict[str, Any]) -> dict[str, Any]:
        d = self.data
        k = int(d.obj[row])
        jd = float(d.time[row]) + MJD_OFFSET
        candid = self.point_id(row, ZTF_ID_BASE)
        point = dict(template)
        point.update(
            jd=jd, fid=ZTF_FID[d.band[row]], pid=candid // 1000, candid=candid, programid=1,
            isdiffpos="t" if self.positive[row] else "f", ra=float(self.ra[k]), dec=float(self.dec[k]),
            magpsf=float(self.magpsf[row]), sigmapsf=float(self.sigmapsf[row]),
            magnr=float(d.ref_mag[row]), sigmagnr=float(self.sigmagnr[row]), distnr=0.1,
            ranr=float(self.ra[k]), decnr=float(self.dec[k]), rbversion="sim", drbversion="sim",
        )
        return {key: value for key, value in point.items() if key in template}

    def rubin_source(self, row: int) -> dict[str, Any]:
        d = self.data
        k = int(d.obj[row])
        source = dict(self.point_template)
        source.update(
            diaSourceId=self.point_id(row, RUBIN_SOURCE_BASE), diaObjectId=RUBIN_OBJECT_BASE + k,
            midpointMjdTai=float(d.time[row]), band=str(d.band[row]), ra=float(self.ra[k]), dec=float(self.dec[k]),
            psfFlux=float(self.diff_njy[row]), psfFluxErr=float(self.flux_err_njy[row]),
            scienceFlux=float(self.flux_njy[row]), scienceFluxErr=float(self.flux_err_njy[row]),
            visit=int(self.point_id(row, 0)), detector=0,
        )
        return source

    def record(self, row: int, history: range) -> tuple[int, bytes]:
        """One alert's Avro bytes, assembled from per-point encodings made once.

        A point appears in up to hundreds of later alerts' histories; encoding it once
        and splicing the bytes (an Avro array is a count, the items, and a 0) is what
        makes a 10^4-alert stream take seconds rather than minutes.
        """
        k = int(self.data.obj[row])
        if self.cfg.survey == "ztf":
            candid = self.point_id(row, ZTF_ID_BASE)
            fields = {
                "schemavsn": _string("4.02"), "publisher": _string("broker-filter simulate"),
                "objectId": _string(str(self.data.meta.at[k, "object_id"])),
                "candid": avro_frame.write_long(candid),
                "candidate": self._encode_point(self.ztf_point(row, self.point_template), self._point_schema),
                "prv_candidates": self._array("prv_candidates", [self._history_bytes(j) for j in history]),
            }
            return candid, self._assemble(fields)
        source = self._history_bytes(row)
        source_id = self.point_id(row, RUBIN_SOURCE_BASE)
        fields = {
            "diaSourceId": avro_frame.write_long(source_id), "alertId": avro_frame.write_long(source_id),
            "diaSource": source,
            "prvDiaSources": self._array("prvDiaSources", [self._history_bytes(j) for j in history]),
            "diaObject": self._union("diaObject", self._object_bytes(k)),
        }
        return source_id, self._assemble(fields)

    def _assemble(self, fields: dict[str, bytes]) -> bytes:
        return b"".join(fields[name] if name in fields else self._null[name] for name in self._field_names)

    def _array(self, name: str, items: list[bytes]) -> bytes:
        if not items:
            return self._null[name]
        return self._union(name, avro_frame.write_long(len(items)) + b"".join(items) + b"\x00")

    def _union(self, name: str, payload: bytes) -> bytes:
        return avro_frame.write_long(self._value_branch[name]) + payload

    def _history_bytes(self, row: int) -> bytes:
        cached = self._encoded.get(row)
        if cached is None:
            if self.cfg.survey == "ztf":
                cached = self._encode_point(self.ztf_point(row, self.prv_template), self._prv_schema)
            else:
                cached = self._encode_point(self.rubin_source(row), self._point_schema)
            self._encoded[row] = cached
        return cached

    def _object_bytes(self, k: int) -> bytes:
        cached = self._encoded_objects.get(k)
        if cached is None:
            dia_object = dict(self.object_template, diaObjectId=RUBIN_OBJECT_BASE + k,
                              ra=float(self.ra[k]), dec=float(self.dec[k]))
            cached = self._encoded_objects[k] = self._encode_point(dia_object, self._object_schema)
        return cached

    @staticmethod
    def _encode_point(record: dict[str, Any], parsed: Any) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        return buffer.getvalue()

    def stream_object_id(self, k: int) -> str:
        """The object id as a decoder will report it."""
        return str(self.data.meta.at[k, "object_id"]) if self.cfg.survey == "ztf" else str(RUBIN_OBJECT_BASE + k)


def _alerts(encoder: _Encoder, history_days: float) -> Iterator[tuple[int, bytes]]:
    """(alert id, encoded record) in observation-time order across objects."""
    d = encoder.data
    encoder.prepare()
    order = np.lexsort((d.obj, d.time))
    for row in order.tolist():
        first = encoder._first_row[d.obj[row]]
        lo = first + int(np.searchsorted(d.time[first:row], d.time[row] - history_days, side="left"))
        yield encoder.record(row, range(lo, row))


def simulate(lightcurves: Path | str, out: Path | str, cfg: SimulationConfig = SimulationConfig(),
             on_alert: Callable[[], None] | None = None) -> SimulationSummary:
    """Write the alert archive (folder, or ``.tar.gz`` of one-alert files) and its labels.

    ``on_alert`` is called after each alert is encoded (the command's progress bar).
    """
    lightcurves, out = Path(lightcurves), Path(out)
    for name in ("objects.csv", "lightcurves.parquet"):
        if not (lightcurves / name).is_file():
            raise FileNotFoundError(f"{lightcurves / name} not found (expected lightcurves.parquet + objects.csv)")
    data = _load(lightcurves, cfg)
    encoder = _Encoder(cfg, data)
    history = cfg.history_days if cfg.history_days is not None else HISTORY_DAYS[cfg.survey]
    alerts = _alerts(encoder, history)
    if on_alert is not None:
        alerts = _reporting(alerts, on_alert)
    count = _write_tar(out, encoder, alerts) if out.name.endswith((".tar.gz", ".tgz")) else _write_folder(out, encoder, alerts, cfg.alerts_per_file)
    labels = _write_labels(labels_path(out), encoder)
    bands = pd.Series(data.band).value_counts().to_dict()
    return SimulationSummary(count, len(data.meta), out, labels, data.dropped, {str(k): int(v) for k, v in bands.items()})


def _reporting(alerts: Iterator[tuple[int, bytes]], on_alert: Callable[[], None]) -> Iterator[tuple[int, bytes]]:
    for alert in alerts:
        yield alert
        on_alert()


def _write_tar(out: Path, encoder: _Encoder, alerts: Iterator[tuple[int, bytes]]) -> int:
    """A ZTF-nightly-style tarball: one one-record container file per alert."""
    out.parent.mkdir(parents=True, exist_ok=True)
    header = avro_frame.header_bytes(encoder.schema_json)
    count = 0
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        for alert_id, record in alerts:
            payload = header + avro_frame.write_long(1) + avro_frame.write_long(len(record)) + record + b"\x00" * avro_frame.SYNC_SIZE
            info = tarfile.TarInfo(f"{alert_id}.avro")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            count += 1
    return count


def _write_folder(out: Path, encoder: _Encoder, alerts: Iterator[tuple[int, bytes]], per_file: int) -> int:
    """Container files of up to ``per_file`` alerts each, numbered in stream order."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("alerts-*.avro"):
        stale.unlink()
    count = 0
    chunk: list[bytes] = []
    for _, record in alerts:
        chunk.append(record)
        count += 1
        if len(chunk) == per_file:
            _flush_chunk(out, encoder, chunk, (count - 1) // per_file)
    if chunk:
        _flush_chunk(out, encoder, chunk, (count - 1) // per_file)
    return count


def _flush_chunk(out: Path, encoder: _Encoder, chunk: list[bytes], number: int) -> None:
    (out / f"alerts-{number:05d}.avro").write_bytes(avro_frame.container_file(encoder.schema_json, chunk))
    chunk.clear()


def _write_labels(path: Path, encoder: _Encoder) -> Path:
    d = encoder.data
    counts = np.bincount(d.obj.astype(np.int64), minlength=int(d.meta.index.max()) + 1 if len(d.meta) else 0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object_id", "lightcurve_id", "source", "survey_class", "period", "n_alerts", "bands"])
        for k, row in d.meta.iterrows():
            bands = "".join(sorted(set(d.band[d.obj == k].tolist())))
            period = row["period"] if isinstance(row["period"], float) and math.isfinite(row["period"]) else ""
            writer.writerow([encoder.stream_object_id(int(k)), row["object_id"], row["source"],
                             row["survey_class"], period, int(counts[k]), bands])
    return path
