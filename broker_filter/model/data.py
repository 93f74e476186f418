"""Light curves and the loaders for the archives the model trains on.

One :class:`LightCurve` is one object in one band: the RNN reads a single band at a time
(as in Naul et al. 2018 and Tsang & Schultz 2019), and an object seen in several bands
yields several light curves that are combined again per object when scoring.

Loaders:

* :func:`load_lightcurve_table` reads the project's own layout (``lightcurves.parquet``
  with one row per observation, ``objects.csv`` with one row per object), the layout of
  ``data/lightcurves/`` in the repository.
* :func:`load_asas3_dat` reads ASAS-3 per-star ``.dat`` files.
* :func:`load_asassn` reads the ASAS-SN Variable Stars Database export (catalogue CSV and
  one CSV per star), dropping upper limits and stars below a ``class_probability`` cut.

Every loader returns points sorted by time with non-finite rows removed, and raises
:class:`DataError` (one clear line) for a missing file or a malformed table.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from broker_filter.model.lightcurve import DataError, LightCurve

#: ASAS-3 and ASAS-SN times are heliocentric JDs; MJD = HJD - 2400000.5 (the light-travel
#: correction, at most ~8 minutes, is far below the cadence and ignored, as in the data README).
JD_TO_MJD = 2400000.5
#: ASAS-3 catalogues often quote HJD - 2450000; such small values are shifted back.
ASAS_REDUCED_JD_OFFSET = 2450000.0


def lightcurves_digest(lcs: Iterable[LightCurve]) -> str:
    """sha256 over ids, bands, labels and points: identifies the exact training data of a bundle."""
    digest = hashlib.sha256()
    for lc in sorted(lcs, key=lambda c: (c.object_id, c.band)):
        digest.update(f"{lc.object_id}\0{lc.band}\0{lc.label}\0{lc.period}\0".encode())
        for array in (lc.time, lc.mag, lc.mag_err):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# The project's own layout: lightcurves.parquet + objects.csv
# ---------------------------------------------------------------------------------------

OBSERVATION_COLUMNS = ("object_id", "band", "time", "mag", "mag_err")
OBJECT_COLUMNS = ("object_id", "source", "survey_class", "period")


def load_lightcurve_table(
    directory: str | Path,
    *,
    sources: Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
) -> list[LightCurve]:
    """Read ``DIR/lightcurves.parquet`` and ``DIR/objects.csv``: one LightCurve per object AND band.

    ``sources`` / ``bands`` keep only those archives (``objects.csv``'s ``source`` column)
    and bands. Objects listed in ``objects.csv`` without observations are skipped;
    observations of objects missing from ``objects.csv`` are a :class:`DataError` (their
    label would be silently lost otherwise).
    """
    directory = Path(directory)
    table_path, objects_path = directory / "lightcurves.parquet", directory / "objects.csv"
    for path in (table_path, objects_path):
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected the lightcurves.parquet + objects.csv layout)")
    try:
        observations = pd.read_parquet(table_path, columns=list(OBSERVATION_COLUMNS))
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{table_path}: cannot read ({error})") from error
    objects = _read_csv(objects_path, OBJECT_COLUMNS, dtype={"object_id": str, "source": str, "survey_class": str})
    objects = objects.set_index("object_id")
    if sources is not None:
        objects = objects[objects["source"].isin(list(sources))]
        observations = observations[observations["object_id"].isin(objects.index)]
    if bands is not None:
        observations = observations[observations["band"].isin(list(bands))]
    unknown = set(observations["object_id"].unique()) - set(objects.index)
    if unknown:
        raise DataError(f"{table_path}: {len(unknown)} object(s) not in objects.csv, e.g. {sorted(unknown)[:3]}")

    lightcurves = []
    for (object_id, band), rows in observations.groupby(["object_id", "band"], sort=True):
        meta = objects.loc[object_id]
        lightcurves.append(
            LightCurve(
                object_id=str(object_id),
                band=str(band),
                time=rows["time"].to_numpy(np.float64),
                mag=rows["mag"].to_numpy(np.float64),
                mag_err=rows["mag_err"].to_numpy(np.float64),
                period=_optional_float(meta["period"]),
                label=_optional_str(meta["survey_class"]),
                source=_optional_str(meta["source"]),
            ).cleaned()
        )
    return lightcurves


# ---------------------------------------------------------------------------------------
# ASAS-3 per-star .dat files
# ---------------------------------------------------------------------------------------

#: ACVS photometry files: HJD, MAG_0..MAG_4, MER_0..MER_4, GRADE, FRAME (five apertures).
_ACVS_COLUMNS = 13
_ACVS_GOOD_GRADES = frozenset({"A", "B"})


def load_asas3_dat(
    paths: Iterable[str | Path],
    *,
    labels: dict[str, str] | None = None,
    periods: dict[str, float] | None = None,
    source: str = "asas3",
) -> list[LightCurve]:
    """Read ASAS-3 ``.dat`` files (one star each) as V-band light curves.

    Two layouts are accepted, both whitespace- or comma-separated with ``#`` comments:
    three columns ``HJD mag mag_err`` (the cesium-data ASAS training set), or the ACVS
    thirteen-column file (``HJD MAG_0..4 MER_0..4 GRADE FRAME``) of which aperture 0 is
    used and only grades A and B are kept. HJD may be full or minus 2450000. The object
    id is the file's stem; ``labels``/``periods`` map stems to survey classes and periods.
    """
    labels, periods = labels or {}, periods or {}
    lightcurves = []
    for path in map(Path, paths):
        time, mag, err = _read_asas3_columns(path)
        time = np.where(time < ASAS_REDUCED_JD_OFFSET, time + ASAS_REDUCED_JD_OFFSET, time) - JD_TO_MJD
        lightcurves.append(
            LightCurve(path.stem, "V", time, mag, err, periods.get(path.stem), labels.get(path.stem), source).cleaned()
        )
    return lightcurves


def _read_asas3_columns(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = re.split(r"[,\s]+", line)
        if len(fields) == _ACVS_COLUMNS:
            if fields[11] not in _ACVS_GOOD_GRADES:
                continue
            fields = [fields[0], fields[1], fields[6]]
        elif len(fields) != 3:
            raise DataError(f"{path}:{number}: expected 3 (HJD mag err) or {_ACVS_COLUMNS} (ACVS) columns, got {len(fields)}")
        try:
            rows.append([float(value) for value in fields])
        except ValueError as error:
            raise DataError(f"{path}:{number}: not a number ({error})") from error
    if not rows:
        raise DataError(f"{path}: no photometry rows")
    array = np.asarray(rows, dtype=np.float64)
    # ACVS marks missing apertures with 29.999 / 99.999.
    array = array[(array[:, 1] < 29.0) & (array[:, 2] < 9.0)]
    return array[:, 0], array[:, 1], array[:, 2]


# ---------------------------------------------------------------------------------------
# ASAS-SN Variable Stars Database
# ---------------------------------------------------------------------------------------

_ASASSN_ID_COLUMNS = ("asassn_name", "ASASSN-V", "id", "source_id", "name", "Name")
_ASASSN_CLASS_COLUMNS = ("variable_type", "Type", "type")


def load_asassn(
    catalogue_csv: str | Path,
    lightcurve_dir: str | Path,
    class_prob: float = 0.9,
) -> list[LightCurve]:
    """Read the ASAS-SN Variable Stars Database export: catalogue CSV + one CSV per star.

    The catalogue needs a star-name column (``asassn_name``, ``ASASSN-V``, ``id``,
    ``source_id`` or ``name``), a class column (``variable_type`` or ``Type``), ``period``
    and ``class_probability``; stars below ``class_prob`` are dropped, as the paper did
    (0.9). Each star's light curve is ``lightcurve_dir/<name>.csv`` (spaces in names become
    underscores if the file is found that way) with the header
    ``HJD,UT Date,Camera,FWHM,Limit,mag,mag_err,flux(mJy),flux_err`` and an optional
    ``Filter`` column (V or g; V when absent). Rows whose ``mag`` starts with ``>`` are upper
    limits, not detections, and are dropped. Stars without a light-curve file are skipped.
    """
    catalogue_csv, lightcurve_dir = Path(catalogue_csv), Path(lightcurve_dir)
    catalogue = _read_csv(catalogue_csv, (), dtype=str)
    id_column = _first_present(catalogue, _ASASSN_ID_COLUMNS, catalogue_csv)
    class_column = _first_present(catalogue, _ASASSN_CLASS_COLUMNS, catalogue_csv)
    for column in ("period", "class_probability"):
        if column not in catalogue.columns:
            raise DataError(f"{catalogue_csv}: missing column {column!r}")
    probability = pd.to_numeric(catalogue["class_probability"], errors="coerce")
    catalogue = catalogue[probability >= class_prob]

    lightcurves = []
    for _, star in catalogue.iterrows():
        name = str(star[id_column]).strip()
        path = _asassn_lightcurve_path(lightcurve_dir, name)
        if path is None:
            continue
        period = _optional_float(pd.to_numeric(star["period"], errors="coerce"))
        lightcurves.extend(_read_asassn_star(path, name, period, _optional_str(star[class_column])))
    return lightcurves


def _asassn_lightcurve_path(directory: Path, name: str) -> Path | None:
    for candidate in (name, name.replace(" ", "_"), name.replace(" ", "")):
        path = directory / f"{candidate}.csv"
        if path.is_file():
            return path
    return None


def _read_asassn_star(path: Path, name: str, period: float | None, label: str | None) -> list[LightCurve]:
    table = _read_csv(path, ("HJD", "mag", "mag_err"), dtype={"mag": str})
    detections = table[~table["mag"].str.strip().str.startswith(">")]
    bands = detections["Filter"].astype(str).str.strip() if "Filter" in detections.columns else pd.Series("V", index=detections.index)
    time = pd.to_numeric(detections["HJD"], errors="coerce").to_numpy(np.float64) - JD_TO_MJD
    mag = pd.to_numeric(detections["mag"], errors="coerce").to_numpy(np.float64)
    err = pd.to_numeric(detections["mag_err"], errors="coerce").to_numpy(np.float64)
    lightcurves = []
    for band in sorted(bands.unique()):
        keep = (bands == band).to_numpy()
        lightcurves.append(LightCurve(name, band, time[keep], mag[keep], err[keep], period, label, "asassn").cleaned())
    return lightcurves


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str], dtype=None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, dtype=dtype, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot parse as CSV ({error})") from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    return table


def _first_present(table: pd.DataFrame, names: Sequence[str], path: Path) -> str:
    for name in names:
        if name in table.columns:
            return name
    raise DataError(f"{path}: none of the columns {list(names)} is present")


def _optional_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _optional_str(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------------------------------
# Period tables: estimated periods computed once and reused
# ---------------------------------------------------------------------------------------

PERIOD_COLUMNS = ("object_id", "band", "period")


def load_period_table(path: str | Path) -> dict[tuple[str, str], float]:
    """Read a CSV ``object_id,band,period`` into {(object_id, band): period (days)}.

    Estimating periods is the slow part of preprocessing on CPU (a fine Lomb-Scargle grid
    over years of baseline); training and evaluation reuse a table made by the same
    estimator (``broker_filter.model.period``) instead of recomputing it on every run.
    """
    table = _read_csv(Path(path), PERIOD_COLUMNS, dtype={"object_id": str, "band": str})
    periods = pd.to_numeric(table["period"], errors="coerce")
    return {(o, b): float(p) for o, b, p in zip(table["object_id"], table["band"], periods) if p == p and p > 0}


def save_period_table(path: str | Path, periods: dict[tuple[str, str], float]) -> None:
    """Write {(object_id, band): period} as a CSV sorted by object and band."""
    rows = sorted((o, b, p) for (o, b), p in periods.items())
    pd.DataFrame(rows, columns=list(PERIOD_COLUMNS)).to_csv(path, index=False, float_format="%.9g")


# ---------------------------------------------------------------------------------------
# An external split, made before anything is fitted
# ---------------------------------------------------------------------------------------


def split_lightcurve_table(
    directory: str | Path, out_dir: str | Path, mapping, fraction: float = 0.15, seed: int = 0
) -> dict[str, int]:
    """Write ``out_dir/train`` and ``out_dir/external``, both in the ``lightcurves.parquet + objects.csv`` layout.

    ``fraction`` of the objects of each known class (stratified, at least one per class of
    two or more) go to ``external``, with every object of a novelty set (they are never
    trained on, and the external evaluation needs them); the rest go to ``train``. Made
    before training, so that nothing fitted (weights, scalers, calibration, periods) sees
    the external objects. Returns the object count of each part.
    """
    directory, out_dir = Path(directory), Path(out_dir)
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the held-out fraction must be in (0, 1), got {fraction}")
    objects = _read_csv(directory / "objects.csv", OBJECT_COLUMNS, dtype={"object_id": str, "source": str, "survey_class": str})
    observations = pd.read_parquet(directory / "lightcurves.parquet")
    rng = np.random.default_rng(seed)
    labels = objects["survey_class"].map(lambda c: mapping.label_of(c) if isinstance(c, str) else None)
    novel = objects["survey_class"].map(lambda c: isinstance(c, str) and mapping.novelty_set_of(c) is not None)
    external = set(objects.loc[novel, "object_id"])
    for label in sorted(set(labels.dropna())):
        ids = sorted(objects.loc[labels == label, "object_id"])
        rng.shuffle(ids)
        take = max(int(round(fraction * len(ids))), 1) if len(ids) > 1 else 0
        external.update(ids[:take])
    known_or_novel = labels.notna() | novel
    parts = {"external": objects["object_id"].isin(external) & known_or_novel,
             "train": ~objects["object_id"].isin(external) & labels.notna()}
    for name, keep in parts.items():
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        ids = set(objects.loc[keep, "object_id"])
        objects[keep].to_csv(target / "objects.csv", index=False)
        observations[observations["object_id"].isin(ids)].to_parquet(target / "lightcurves.parquet", index=False)
    return {name: int(keep.sum()) for name, keep in parts.items()}
