"""Replay archived alerts: ZTF nightly ``.tar.gz`` files, ``.avro`` files and folders of them.

Each record becomes an :class:`ArchiveItem` carrying the decoded :class:`Alert` (or the
:class:`DecodeError`) and the bytes of that ONE alert as it travels on Kafka — a
one-record container file, the way ZTF publishes — so that a replay can produce it to a
topic or dead-letter it without decoding twice. A bad file or record yields an item with
``error`` set and the source goes on; only a path that does not exist raises, before
anything is yielded.

``order="time"`` yields by the alert's observation time across all inputs. It must see
every alert before the first is yielded, so it holds the whole archive's items in
memory; ``order="file"`` streams in constant memory.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from broker_filter.streams import avro_frame
from broker_filter.streams.alert import Alert, DecodeError
from broker_filter.streams.codec import MAX_PAYLOAD_BYTES, AlertDecoder, read_record

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
AVRO_SUFFIX = ".avro"
SECONDS_PER_DAY = 86400.0


class ArchiveItem:
    """One archived alert: where it came from, its Kafka payload, and its decoding.

    ``payload`` is built on first access for records of multi-record files (re-framing
    costs a copy); items of one-record files and tar members hold their bytes as read.
    """

    __slots__ = ("origin", "position", "alert", "error", "_payload", "_make_payload")

    def __init__(self, origin: str, position: int, alert: Alert | None, error: DecodeError | None,
                 payload: bytes | None = None, make_payload: Callable[[], bytes] | None = None) -> None:
        self.origin = origin
        self.position = position
        self.alert = alert
        self.error = error
        self._payload = payload
        self._make_payload = make_payload

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = self._make_payload() if self._make_payload is not None else b""
            self._make_payload = None
        return self._payload

    def __repr__(self) -> str:
        state = f"alert={self.alert.alert_id}" if self.alert else f"error={self.error}"
        return f"ArchiveItem({self.origin!r}, {self.position}, {state})"


def iter_archive(paths: Sequence[Path | str], *, keep_cutouts: bool = False,
                 order: Literal["time", "file"] = "time", pace: float | None = None,
                 decoder: AlertDecoder | None = None) -> Iterator[ArchiveItem]:
    """Yield every alert of ``paths`` (files or folders, searched recursively).

    ``pace``: replay at ``pace`` times real time (1.0 = as observed, 3600 = an hour of
    observations per second), sleeping between alerts by their observation times; it
    implies ``order="time"``.
    """
    files = list(_expand(paths))  # raises FileNotFoundError before the first item
    decoder = decoder or AlertDecoder(keep_cutouts=keep_cutouts)
    items = (item for path in files for item in _iter_file(path, decoder))
    if order == "file" and pace is None:
        yield from items
        return
    if order not in ("time", "file"):
        raise ValueError(f"order must be 'time' or 'file', not {order!r}")
    ordered = sorted(items, key=_event_time)
    yield from _paced(ordered, pace) if pace else ordered


def _event_time(item: ArchiveItem) -> float:
    """Undecodable items sort first: dead-lettered before the stream they came with."""
    return item.alert.time if item.alert is not None else float("-inf")


def _paced(items: list[ArchiveItem], pace: float) -> Iterator[ArchiveItem]:
    start_wall = time.monotonic()
    start_event: float | None = None
    for item in items:
        if item.alert is not None:
            if start_event is None:
                start_event = item.alert.time
            due = start_wall + (item.alert.time - start_event) * SECONDS_PER_DAY / pace
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item


def _expand(paths: Sequence[Path | str]) -> Iterator[Path]:
    resolved = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"alert source {path} does not exist")
        resolved.append(path)
    for path in resolved:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and _is_alert_file(p))
        else:
            yield path


def _is_alert_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(AVRO_SUFFIX) or name.endswith(ARCHIVE_SUFFIXES)


def _iter_file(path: Path, decoder: AlertDecoder) -> Iterator[ArchiveItem]:
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        yield from _iter_tar(path, decoder)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield ArchiveItem(str(path), 0, None, DecodeError("truncated", f"cannot read: {exc}"), payload=b"")
            return
        yield from iter_container_items(str(path), data, decoder)


def _iter_tar(path: Path, decoder: AlertDecoder) -> Iterator[ArchiveItem]:
    """Members in archive order; a damaged tarball ends with one error item."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(AVRO_SUFFIX):
                    continue  # links, devices, folders: never followed
                if member.size > MAX_PAYLOAD_BYTES:  # a 139-byte .tar.gz may declare a 1 GiB sparse member
                    yield ArchiveItem(f"{path}:{member.name}", 0, None,
                                      DecodeError("too_large", f"member of {member.size} bytes > {MAX_PAYLOAD_BYTES}"), payload=b"")
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                yield from iter_container_items(f"{path}:{member.name}", data, decoder)
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield ArchiveItem(str(path), -1, None, DecodeError("truncated", f"damaged archive: {exc}"), payload=b"")


def iter_container_items(origin: str, data: bytes, decoder: AlertDecoder) -> Iterator[ArchiveItem]:
    """Items of one container file; a one-record file is its own payload."""
    try:
        header = avro_frame.read_header(data)
        schema = decoder.schema_for_text(header.schema_json)
    except Exception as exc:  # noqa: BLE001 - the per-message boundary (DecodeError.boundary)
        yield ArchiveItem(origin, 0, None, DecodeError.boundary(exc), payload=data)
        return
    position = 0
    blocks = avro_frame.iter_blocks(data, header, decoder.limits.max_decoded_bytes)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a damaged block ends the file: what follows is unframed
            yield ArchiveItem(origin, position, None, DecodeError.boundary(exc), payload=data)
            return
        stream = io.BytesIO(block.data)
        single = _is_single_record(header, block, data)
        for index in range(block.count):
            start = stream.tell()
            try:
                record = read_record(stream, schema)
            except Exception as exc:  # noqa: BLE001 - record boundaries are lost: the rest of the block goes with it
                error = DecodeError.boundary(exc, "invalid_value")
                lost = block.count - index - 1
                detail = f"{error.detail}; the block's {lost} later record(s) are unreadable" if lost else error.detail
                yield ArchiveItem(origin, position, None, DecodeError(error.reason, detail),
                                  make_payload=_framer(header.schema_json, block.data[start:]))
                position += 1
                break
            try:
                alert, error = decoder.convert(record, schema), None
            except DecodeError as exc:
                alert, error = None, exc
            if single:
                yield ArchiveItem(origin, position, alert, error, payload=data)
            else:
                yield ArchiveItem(origin, position, alert, error,
                                  make_payload=_framer(header.schema_json, block.data[start : stream.tell()]))
            position += 1


def _is_single_record(header: avro_frame.ContainerHeader, block: avro_frame.Block, data: bytes) -> bool:
    return block.count == 1 and block.offset == header.end and len(data) == block.offset + _block_size(data, block)


def _block_size(data: bytes, block: avro_frame.Block) -> int:
    _, pos = avro_frame.read_long(data, block.offset)
    size, pos = avro_frame.read_long(data, pos)
    return pos - block.offset + size + avro_frame.SYNC_SIZE


def _framer(schema_json: bytes, record: bytes) -> Callable[[], bytes]:
    return lambda: avro_frame.single_record_container(schema_json, record)
