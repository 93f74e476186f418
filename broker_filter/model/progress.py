"""Progress for long commands: a bar with an ETA for a person, periodic log lines otherwise.

On a terminal with text logs a tqdm bar is drawn on stderr. Anywhere else (systemd, CI, a
pipe, JSON logs) a bar would be noise, and silence for a quarter of an hour is worse: the
same object then writes an INFO line every :data:`LOG_EVERY_S` seconds (count, rate, ETA
when the total is known) and one at the end. Lives in the model layer (training uses it) and
is re-exported by :mod:`broker_filter.logging_setup`; the JSON formatter marks itself
``machine_readable`` so that this module can tell JSON logs apart without importing it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY_S = 30.0
log = logging.getLogger("broker_filter.progress")


def machine_readable_logs() -> bool:
    """True when the root logger writes lines for a log pipeline (JSON), not for people."""
    return any(getattr(handler.formatter, "machine_readable", False) for handler in logging.getLogger().handlers)


def progress_bar(iterable: Iterable[T] | None = None, *, total: float | None = None, initial: float = 0,
                 desc: str = "", unit: str = "it", leave: bool = True):
    """A tqdm bar on stderr for a person at a terminal with text logs; else a :class:`LoggedProgress`."""
    if not sys.stderr.isatty() or machine_readable_logs():
        return LoggedProgress(iterable, total=total, initial=initial, desc=desc, unit=unit)
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1, leave=leave)


class LoggedProgress:
    """tqdm's interface as used here (iterate, ``update``, ``set_postfix``, ``close``), as log lines."""

    def __init__(self, iterable: Iterable[T] | None = None, *, total: float | None = None, initial: float = 0,
                 desc: str = "", unit: str = "it", every_s: float = LOG_EVERY_S) -> None:
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc or "progress", unit.strip()
        self.every_s = every_s
        self._start = self._last = time.monotonic()
        self._first = initial
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._log(now)

    def set_postfix(self, **values: object) -> None:
        self._postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self._first and time.monotonic() - self._start >= self.every_s:
                self._log(time.monotonic(), done=True)

    def _log(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._first) / elapsed
        count = f"{self.n:,.0f}" + (f"/{self.total:,.0f}" if self.total else "")
        eta = ""
        if self.total and rate > 0 and not done:
            eta = f", about {(self.total - self.n) / rate:,.0f} s left"
        extra = f"; {self._postfix}" if self._postfix else ""
        log.info("%s: %s %s in %.0f s (%.1f %s/s%s)%s%s", self.desc, count, self.unit, elapsed, rate, self.unit, eta,
                 " done" if done else "", extra)
