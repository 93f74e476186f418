"""Progress bars shown only to a person: on a terminal, with text logs.

Lives in the model layer (training draws one) and is re-exported by
:mod:`broker_filter.logging_setup`; the JSON formatter marks itself ``machine_readable`` so
that this module can tell JSON logs apart without importing the daemon's logging setup.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def machine_readable_logs() -> bool:
    """True when the root logger writes lines for a log pipeline (JSON), not for people."""
    return any(getattr(handler.formatter, "machine_readable", False) for handler in logging.getLogger().handlers)


def progress_bar(iterable: Iterable[T] | None = None, *, total: float | None = None, initial: float = 0,
                 desc: str = "", unit: str = "it", leave: bool = True) -> tqdm:
    """A tqdm bar on stderr, hidden when stderr is not a TTY (systemd, CI, pipes) or logs are JSON."""
    hidden = not sys.stderr.isatty() or machine_readable_logs()
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=hidden,
                dynamic_ncols=True, smoothing=0.1, leave=leave)
