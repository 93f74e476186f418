"""Array-of-records values column by column, and one way to walk them whichever the form.

fastavro returns ``prv_candidates`` as a list of dicts; the compiled reader
(:mod:`broker_filter.streams.fastdecode`) returns it as :class:`Columns`, one list per kept field, since
building ~50 dicts of 13 keys per alert would cost more than decoding the bytes did. The
survey converters read both through :func:`rows`, so the photometry is written once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Columns:
    """Items of an array of records: ``values[name][i]`` is field ``name`` of item ``i``.

    ``present[i]`` is False where the item itself is null (an array of ``[record, "null"]``);
    None means every item is a record.
    """

    values: dict[str, list[Any]]
    count: int
    present: list[bool] | None = None

    def __len__(self) -> int:
        return self.count


def rows(items: Any, names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The named fields of each record item, as tuples (a missing field is None).

    ``items`` is :class:`Columns`, a list of dicts (non-dict items are passed over, as a
    null item of a union is), or None / empty.
    """
    if not items:
        return iter(())
    if isinstance(items, Columns):
        empty = [None] * items.count
        columns = [items.values.get(name, empty) for name in names]
        if items.present is None:
            return zip(*columns)
        return (row for row, present in zip(zip(*columns), items.present) if present)
    return (tuple(item.get(name) for name in names) for item in items if isinstance(item, dict))
