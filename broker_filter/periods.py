"""The daemon's period memo: :mod:`broker_filter.model.period_schedule`'s rule, remembered per (object, band).

The rule makes an object's period a pure function of its as-of light curve (estimated on a
prefix that changes only at 25% growth steps, see :mod:`broker_filter.model.period_schedule`), so the
pipeline may remember each (object, band)'s last prefix digest and period and skip the
search while the prefix is unchanged. An entry is used only when the digest of the
current prefix equals the stored one, so a missing or stale entry (restart, crash,
eviction, a rebalance that brings the object back later, a late detection inside the
prefix) costs one search, never a different answer: the Kafka daemon, the replay and the
offline reference give the same periods.

Bounded like the state: at most ``max_objects`` objects, the least recently scored leaving
first (scored objects are recently merged ones, so this follows the state's own LRU).
Used from one thread (the inference thread): not locked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from broker_filter.model.features import PreprocessConfig
from broker_filter.model.lightcurve import LightCurve
from broker_filter.model.period_schedule import period_prefix, prefix_digest

Estimator = Callable[[list[LightCurve]], np.ndarray]


class PeriodSource(Protocol):
    """What the pipeline asks for the periods of a batch's light curves (NaN: let the scorer search)."""

    def periods(self, lcs: Sequence[LightCurve], estimate: Estimator) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    """One (object, band)'s last searched prefix (its digest) and period (slots: no per-entry dict)."""

    digest: bytes
    period: float


class PeriodMemo:
    """:func:`broker_filter.model.period_schedule.scheduled_periods` with a bounded memo; ``hits``/``searches`` count lookups."""

    def __init__(self, cfg: PreprocessConfig, max_objects: int) -> None:
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        self.cfg = cfg
        self.max_objects = max_objects
        self._entries: OrderedDict[str, dict[str, _Entry]] = OrderedDict()
        self.hits = 0
        self.searches = 0

    def __len__(self) -> int:
        return len(self._entries)

    def periods(self, lcs: Sequence[LightCurve], estimate: Estimator) -> np.ndarray:
        """One period per light curve (NaN where it yields no chunk); misses searched in one call."""
        periods = np.full(len(lcs), np.nan)
        missing: dict[tuple[str, str, bytes], tuple[LightCurve, list[int]]] = {}
        for i, lc in enumerate(lcs):
            if not self.cfg.accepts(lc.band):
                continue
            prefix = period_prefix(lc, self.cfg.n_min)
            if prefix is None:
                continue
            digest = prefix_digest(prefix)
            entry = self._lookup(lc.object_id, lc.band)
            if entry is not None and entry.digest == digest:
                periods[i] = entry.period
                self.hits += 1
            else:  # the same prefix twice in one batch (two alerts of an object) is searched once
                missing.setdefault((lc.object_id, lc.band, digest), (prefix, []))[1].append(i)
        if missing:
            found = estimate([prefix for prefix, _ in missing.values()])
            self.searches += len(missing)
            for ((object_id, band, digest), (_, positions)), period in zip(missing.items(), found):
                periods[positions] = period
                self._store(object_id, band, _Entry(digest, float(period)))
        return periods

    def _lookup(self, object_id: str, band: str) -> _Entry | None:
        bands = self._entries.get(object_id)
        if bands is None:
            return None
        self._entries.move_to_end(object_id)
        return bands.get(band)

    def _store(self, object_id: str, band: str, entry: _Entry) -> None:
        self._entries.setdefault(object_id, {})[band] = entry
        self._entries.move_to_end(object_id)
        while len(self._entries) > self.max_objects:
            self._entries.popitem(last=False)
