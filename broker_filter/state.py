"""Light-curve state: every object's detections, per band, merged idempotently and kept durable.

Why it looks like this:

* **Idempotent merge.** A detection is keyed by its survey id (ZTF ``candid``, Rubin
  ``diaSourceId``). Alerts repeat their history (``prv_candidates``, ``prvDiaSources``), and
  after a crash the daemon re-reads alerts it had already merged; merging a detection that
  is held already is a no-op, so both are harmless.
* **Columnar.** Each (object, band) is four numpy arrays (``ids`` int64, ``time`` float64 MJD,
  ``mag``, ``mag_err`` float64), sorted by time: merging is ``np.isin`` + one concatenation,
  and a light curve for the model is a slice, with no per-point Python objects.
* **As-of views.** :meth:`LightCurveStore.view` returns only points observed at or before a
  time (the alert's own). An alert's record is then a function of the alert and of the
  detections that precede it, whether or not later alerts were merged already — which is
  what makes re-processing after a crash (state saved, Kafka transaction not committed)
  produce the same records again.
* **Bounded.** At most ``max_points_per_object`` points per object (the oldest dropped
  first, across bands) and ``max_objects`` objects: in memory, the least recently merged
  object leaves first (it stays on disk); on disk, the objects whose latest detection is
  oldest are deleted at each flush beyond the bound.
* **Durable.** An SQLite file in WAL mode (stdlib ``sqlite3``; embedded, crash-safe, readable
  with any SQLite tool). :meth:`LightCurveStore.flush` writes every changed object in one
  SQLite transaction; the daemon calls it *before* committing the Kafka transaction, so
  committed input offsets never run ahead of saved state.

The file's format (``format_version`` 1 in table ``meta``)::

    objects(object_id TEXT PRIMARY KEY, survey TEXT, last_seen REAL,  -- MJD of the latest detection
            scored BLOB)                                               -- float64 MJDs of alerts scored
    series(object_id TEXT, band TEXT, ids BLOB, time BLOB, mag BLOB, mag_err BLOB,
           PRIMARY KEY (object_id, band))                              -- little-endian int64 / float64

Only real detections with a finite magnitude and positive error are kept: upper limits and
forced photometry are not what the model was trained on.
"""

from __future__ import annotations

import math
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker_filter.model.lightcurve import LightCurve
from broker_filter.streams.alert import Alert, Detection

FORMAT_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY, survey TEXT NOT NULL, last_seen REAL NOT NULL, scored BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS objects_last_seen ON objects (last_seen);
CREATE TABLE IF NOT EXISTS series (
    object_id TEXT NOT NULL, band TEXT NOT NULL,
    ids BLOB NOT NULL, time BLOB NOT NULL, mag BLOB NOT NULL, mag_err BLOB NOT NULL,
    PRIMARY KEY (object_id, band));
"""


class StateError(RuntimeError):
    """The state file cannot be used (unreadable, another format version)."""


@dataclass
class BandSeries:
    """One band of one object: parallel arrays sorted by time."""

    ids: np.ndarray
    time: np.ndarray
    mag: np.ndarray
    mag_err: np.ndarray

    @classmethod
    def empty(cls) -> BandSeries:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return int(self.ids.size)

    def merged(self, ids: np.ndarray, time: np.ndarray, mag: np.ndarray, mag_err: np.ndarray) -> tuple[BandSeries, np.ndarray]:
        """This series plus the detections whose id it does not hold yet; and the ids of those."""
        fresh = _absent(ids, self.ids)
        if not fresh.any():  # the common case for history an alert repeats
            return self, ids[:0]
        ids, first = np.unique(ids[fresh], return_index=True)  # one alert may repeat an id
        idx = np.flatnonzero(fresh)[first]
        all_ids = np.concatenate([self.ids, ids])
        all_time = np.concatenate([self.time, time[idx]])
        order = np.lexsort((all_ids, all_time))
        merged = BandSeries(
            all_ids[order],
            all_time[order],
            np.concatenate([self.mag, mag[idx]])[order],
            np.concatenate([self.mag_err, mag_err[idx]])[order],
        )
        return merged, ids

    def after(self, cutoff: float) -> BandSeries:
        keep = self.time > cutoff
        return BandSeries(self.ids[keep], self.time[keep], self.mag[keep], self.mag_err[keep])


@dataclass
class ObjectState:
    """Everything held for one object. ``scored`` are the alert times (MJD) at which it was scored."""

    object_id: str
    survey: str
    bands: dict[str, BandSeries] = field(default_factory=dict)
    last_seen: float = float("-inf")
    scored: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_points(self) -> int:
        return sum(len(series) for series in self.bands.values())

    def view(self, as_of: float, bands: Iterable[str] | None = None) -> list[LightCurve]:
        """One light curve per band (in ``bands``, or all) with the points observed at or before ``as_of``."""
        wanted = sorted(self.bands) if bands is None else [b for b in sorted(self.bands) if b in set(bands)]
        curves = []
        for band in wanted:
            series = self.bands[band]
            end = int(np.searchsorted(series.time, as_of, side="right"))
            if end:
                curves.append(LightCurve(self.object_id, band, series.time[:end], series.mag[:end], series.mag_err[:end]))
        return curves

    def scored_within(self, start: float, end: float) -> bool:
        """Whether an alert in [start, end) was scored (``end`` excluded: re-scoring the same alert is allowed)."""
        return bool(np.any((self.scored >= start) & (self.scored < end)))

    def record_scoring(self, when: float, keep_after: float) -> None:
        """Remember a scoring at ``when``; forget those no alert, even one processed again, can need.

        ``keep_after`` is ``when`` minus the throttling interval. Forgetting everything at or
        before it would be enough for alerts arriving in time order, but after a crash the
        daemon processes again alerts older than the newest scoring saved (state flushed,
        Kafka transaction not committed), and their interval check needs older scorings.
        Those alerts are not older than the oldest point held (their own detection is held;
        an older one would see another light curve anyway), so what is kept is every scoring
        within one interval before that point: bounded, as the points are.
        """
        interval = when - keep_after
        scored = np.union1d(self.scored, [when])
        self.scored = scored[scored > min(self.oldest_time, when) - interval]

    @property
    def oldest_time(self) -> float:
        """MJD of the oldest point held (+inf when none)."""
        return min((float(s.time[0]) for s in self.bands.values() if len(s)), default=float("inf"))

    def trim(self, max_points: int) -> int:
        """Drop the oldest points (across bands) beyond ``max_points``; returns how many were dropped."""
        excess = self.n_points - max_points
        if excess <= 0:
            return 0
        times = np.sort(np.concatenate([s.time for s in self.bands.values()]))
        cutoff = times[excess - 1]
        before = self.n_points
        self.bands = {band: s.after(cutoff) for band, s in self.bands.items()}
        self.bands = {band: s for band, s in self.bands.items() if len(s)}
        return before - self.n_points


@dataclass(frozen=True)
class MergeResult:
    """What one alert changed: its object's state after the merge and the points it added (still held after the trim)."""

    state: ObjectState
    new_points: int
    trimmed: int = 0  # oldest points dropped to keep the object under max_points_per_object


class LightCurveStore:
    """Bounded, durable per-object light curves (see the module docstring for the guarantees).

    ``path`` None keeps state in memory only (replay without ``--state``, tests). The
    in-memory map is a write-back cache of the SQLite file: objects are loaded on first use
    and written by :meth:`flush`.
    """

    def __init__(self, path: str | Path | None, *, max_points_per_object: int = 2000, max_objects: int = 1_000_000) -> None:
        self.max_points_per_object = max_points_per_object
        self.max_objects = max_objects
        self._objects: OrderedDict[str, ObjectState] = OrderedDict()
        self._dirty: set[str] = set()
        self._pending: dict[str, ObjectState] = {}  # evicted from memory, not yet written
        self._points = 0
        self.path = Path(path) if path else None
        self._db = _open_database(self.path) if path else None

    # -- merging ---------------------------------------------------------------------

    def merge(self, alert: Alert) -> MergeResult:
        """Add the alert's usable detections not held yet; evict if the store grows past its bounds."""
        state = self._get_or_create(alert.object_id, alert.survey)
        before = state.n_points
        added: dict[str, np.ndarray] = {}
        for band, (ids, time, mag, err) in _usable_by_band(alert.detections).items():
            series, fresh = state.bands.get(band, BandSeries.empty()).merged(ids, time, mag, err)
            state.bands[band] = series
            if fresh.size:
                added[band] = fresh
        new_points = trimmed = 0
        if added:
            state.last_seen = max(state.last_seen, max(s.time[-1] for s in state.bands.values()))
            trimmed = state.trim(self.max_points_per_object)
            if trimmed:  # the new points may be among those cut
                added = {band: fresh[np.isin(fresh, state.bands[band].ids)] for band, fresh in added.items() if band in state.bands}
            new_points = sum(int(fresh.size) for fresh in added.values())
            self._dirty.add(state.object_id)
        self._points += state.n_points - before
        self._objects.move_to_end(state.object_id)
        self._evict_beyond_bound()
        return MergeResult(state, new_points, trimmed)

    def mark_scored(self, state: ObjectState, when: float, keep_after: float) -> None:
        state.record_scoring(when, keep_after)
        self._dirty.add(state.object_id)

    def get(self, object_id: str) -> ObjectState | None:
        if object_id in self._objects:
            return self._objects[object_id]
        loaded = self._load(object_id)
        if loaded is not None:
            self._hold(loaded)
        return loaded

    # -- size ------------------------------------------------------------------------

    @property
    def objects_held(self) -> int:
        return len(self._objects)

    @property
    def points_held(self) -> int:
        return self._points

    def __iter__(self) -> Iterator[ObjectState]:
        return iter(list(self._objects.values()))

    # -- durability ------------------------------------------------------------------

    def flush(self) -> int:
        """Write changed objects in one SQLite transaction, then bound the file; returns objects written."""
        if self._db is None:
            self._dirty.clear()
            self._pending.clear()
            return 0
        changed = [self._objects[o] for o in self._dirty if o in self._objects] + list(self._pending.values())
        try:
            self._write(changed)
        except sqlite3.Error as error:  # disk full, read-only file, a file replaced under us: one clear line, nothing lost
            raise StateError(f"{self.path}: cannot write the state ({error}); free space or move [state] path, then restart: "
                             "uncommitted input is read again") from error
        self._dirty.clear()
        self._pending.clear()
        return len(changed)

    def _write(self, changed: list[ObjectState]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM series WHERE object_id = ?", [(s.object_id,) for s in changed])
            self._db.executemany(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)",
                [(s.object_id, s.survey, s.last_seen, _blob(s.scored, np.float64)) for s in changed],
            )
            self._db.executemany(
                "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.object_id,
                        band,
                        _blob(b.ids, np.int64),
                        _blob(b.time, np.float64),
                        _blob(b.mag, np.float64),
                        _blob(b.mag_err, np.float64),
                    )
                    for s in changed
                    for band, b in s.bands.items()
                ],
            )
            self._bound_stored_objects()

    def release_all(self) -> None:
        """Flush, then forget the in-memory cache (partitions were revoked: their objects may move)."""
        self.flush()
        self._objects.clear()
        self._points = 0

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    # -- internals -------------------------------------------------------------------

    def _get_or_create(self, object_id: str, survey: str) -> ObjectState:
        state = self.get(object_id)
        if state is None:
            state = ObjectState(object_id, survey)
            self._hold(state)
        return state

    def _hold(self, state: ObjectState) -> None:
        self._objects[state.object_id] = state
        self._points += state.n_points

    def _evict_beyond_bound(self) -> None:
        """Least recently merged objects leave memory; unsaved ones wait for the next flush."""
        while len(self._objects) > self.max_objects:
            object_id, victim = self._objects.popitem(last=False)
            self._points -= victim.n_points
            if object_id in self._dirty and self._db is not None:
                self._pending[object_id] = victim
            self._dirty.discard(object_id)

    def _bound_stored_objects(self) -> None:
        """Delete the stored objects observed least recently beyond ``max_objects`` (and forget them here)."""
        (stored,) = self._db.execute("SELECT COUNT(*) FROM objects").fetchone()
        if stored <= self.max_objects:
            return
        victims = [
            object_id
            for (object_id,) in self._db.execute(
                "SELECT object_id FROM objects ORDER BY last_seen, object_id LIMIT ?", (stored - self.max_objects,)
            )
        ]
        self._db.executemany("DELETE FROM objects WHERE object_id = ?", [(o,) for o in victims])
        self._db.executemany("DELETE FROM series WHERE object_id = ?", [(o,) for o in victims])
        for object_id in victims:
            state = self._objects.pop(object_id, None)
            if state is not None:
                self._points -= state.n_points

    def _load(self, object_id: str) -> ObjectState | None:
        if self._db is None:
            return None
        pending = self._pending.pop(object_id, None)
        if pending is not None:
            self._dirty.add(object_id)
            return pending
        row = self._db.execute("SELECT survey, last_seen, scored FROM objects WHERE object_id = ?", (object_id,)).fetchone()
        if row is None:
            return None
        state = ObjectState(object_id, row[0], last_seen=row[1], scored=np.frombuffer(row[2], "<f8").copy())
        for band, ids, time, mag, err in self._db.execute(
            "SELECT band, ids, time, mag, mag_err FROM series WHERE object_id = ?", (object_id,)
        ):
            state.bands[band] = BandSeries(
                np.frombuffer(ids, "<i8").copy(),
                np.frombuffer(time, "<f8").copy(),
                np.frombuffer(mag, "<f8").copy(),
                np.frombuffer(err, "<f8").copy(),
            )
        return state


def _usable_by_band(detections: Sequence[Detection]) -> dict[str, tuple[np.ndarray, ...]]:
    by_band: dict[str, list[Detection]] = {}
    for det in detections:
        if det.usable and not det.forced and math.isfinite(det.time):
            by_band.setdefault(det.band, []).append(det)
    return {
        band: (
            np.fromiter((d.detection_id for d in dets), np.int64, len(dets)),
            np.fromiter((d.time for d in dets), np.float64, len(dets)),
            np.fromiter((d.mag for d in dets), np.float64, len(dets)),
            np.fromiter((d.mag_err for d in dets), np.float64, len(dets)),
        )
        for band, dets in by_band.items()
    }


def _absent(ids: np.ndarray, held: np.ndarray) -> np.ndarray:
    """``~np.isin(ids, held)`` by binary search. On the short arrays one alert brings, isin's
    fixed cost (~70 us a call) was the largest part of a merge in the profile of
    ``broker-filter bench e2e``; this costs ~12 us (that bench's ``state`` rows compare both)."""
    if held.size == 0:
        return np.ones(ids.size, bool)
    ordered = np.sort(held)
    found = ordered[np.minimum(np.searchsorted(ordered, ids), ordered.size - 1)]
    return found != ids


def _blob(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def _open_database(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level="DEFERRED", check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed flush survives power loss, not only a crash
        db.executescript(_SCHEMA)
        with db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (FORMAT_VERSION,))
        version = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
    except (sqlite3.Error, OSError) as error:
        raise StateError(f"{path}: cannot open the state store ({error})") from error
    if version != FORMAT_VERSION:
        raise StateError(f"{path}: state format {version}, this version reads {FORMAT_VERSION}")
    return db
