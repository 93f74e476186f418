"""Micro-batches close by size, by slot count, by age, or on demand."""

from __future__ import annotations

from broker_filter.batching import MicroBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closes_when_enough_scorings():
    batcher = MicroBatcher(max_batch=2, max_wait_ms=1000, max_slots=100, clock=FakeClock())
    assert batcher.add("a", True) is None
    assert batcher.add("b", False) is None
    batch = batcher.add("c", True)
    assert batch is not None and batch.slots == ["a", "b", "c"] and batch.n_scoring == 2
    assert batcher.pending == 0


def test_closes_by_age_and_by_slot_count():
    clock = FakeClock()
    batcher = MicroBatcher(max_batch=10, max_wait_ms=50, max_slots=3, clock=clock)
    batcher.add("a", False)
    clock.now = 0.049
    assert batcher.due() is None
    clock.now = 0.05
    assert batcher.due().slots == ["a"]
    batcher.add("x", False)
    batcher.add("y", False)
    assert batcher.add("z", False).slots == ["x", "y", "z"]
    assert batcher.take() is None
