"""File sinks for records (dicts): JSON lines, Avro container files, Parquet.

They share the small :class:`Sink` protocol (``write``, ``flush``, ``close``, context
manager) so that a replay writes files the way the daemon writes topics. Records are
plain dicts of JSON-able values (the daemon's output records, dead-letter entries).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import fastavro


@runtime_checkable
class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Sink": ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class _FileSink:
    """Context-manager plumbing shared by the sinks."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class JsonlSink(_FileSink):
    """One JSON object per line; appends, so that a resumed replay adds to its output."""

    def __init__(self, path: Path | str, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(_json_safe(record), default=_json_default, allow_nan=False) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class AvroSink(_FileSink):
    """An Avro container file of records written with ``schema`` (validated by fastavro).

    fastavro's ``Writer`` buffers records and writes a block every ``sync_interval``
    bytes; ``flush`` forces the pending block out (a reader sees only whole blocks).
    """

    def __init__(self, path: Path | str, schema: dict[str, Any], codec: str = "deflate",
                 sync_interval: int = 1 << 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._writer = fastavro.write.Writer(self._file, fastavro.parse_schema(schema), codec=codec,
                                             sync_interval=sync_interval)

    def write(self, record: dict[str, Any]) -> None:
        self._writer.write(record)

    def flush(self) -> None:
        self._writer.flush()
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


class ParquetSink(_FileSink):
    """A Parquet file written in row groups of ``row_group_size`` records (pyarrow).

    The column types are inferred from the first row group; later groups are cast to it,
    so a record set must keep one shape (the daemon's output records do).
    """

    def __init__(self, path: Path | str, row_group_size: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._row_group_size = row_group_size
        self._rows: list[dict[str, Any]] = []
        self._writer = None
        self._schema = None
        self._closed = False

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append(record)
        if len(self._rows) >= self._row_group_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(table)
        self._rows.clear()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        if self._writer is None:  # nothing written: still leave a valid, empty file
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self.path)
        else:
            self._writer.close()
        self._closed = True
