"""Micro-batches: alerts gathered until enough objects wait for the model, or the oldest waited long enough.

A GPU scores a thousand light curves in about the time it scores one, so objects to score
are gathered; but an alert must not wait long for company, so a batch also closes by age
(``max_wait_ms`` after its first alert). A batch keeps every alert in arrival order, the
ones that need the model and the ones that do not (below the minimum, throttled,
dead-lettered), because a batch is also the unit of commit: its outputs and its input
offsets go out together in one Kafka transaction. ``max_slots`` bounds a batch with few
scorings (e.g. a stream of young objects below the minimum).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Slot = TypeVar("Slot")


@dataclass
class MicroBatch(Generic[Slot]):
    """Slots in arrival order; ``n_scoring`` of them await the model."""

    opened_at: float
    slots: list[Slot] = field(default_factory=list)
    n_scoring: int = 0

    def __len__(self) -> int:
        return len(self.slots)


class MicroBatcher(Generic[Slot]):
    """Collects slots into :class:`MicroBatch` es closed by size (scorings or slots) or by age."""

    def __init__(self, max_batch: int, max_wait_ms: float, max_slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_slots = max_slots
        self._clock = clock
        self._open: MicroBatch[Slot] | None = None

    def add(self, slot: Slot, needs_scoring: bool) -> MicroBatch[Slot] | None:
        """Add one slot; returns the batch if this slot filled it (then a new batch opens)."""
        if self._open is None:
            self._open = MicroBatch(self._clock())
        self._open.slots.append(slot)
        self._open.n_scoring += int(needs_scoring)
        if self._open.n_scoring >= self.max_batch or len(self._open) >= self.max_slots:
            return self.take()
        return None

    def due(self) -> MicroBatch[Slot] | None:
        """The open batch if it has waited ``max_wait_ms`` (call this when no input arrives)."""
        if self._open is not None and self._clock() - self._open.opened_at >= self.max_wait_s:
            return self.take()
        return None

    def take(self) -> MicroBatch[Slot] | None:
        """Close and return the open batch now (end of input, shutdown, rebalance)."""
        batch, self._open = self._open, None
        return batch

    @property
    def pending(self) -> int:
        return 0 if self._open is None else len(self._open)
