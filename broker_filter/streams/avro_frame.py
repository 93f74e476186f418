"""Avro object-container framing: the header, the blocks, and one-record files.

ZTF publishes every alert on Kafka as a complete one-record container file, so a decoder
meets the container header once per message. ``fastavro.reader`` re-parses the header's
writer schema on every call (about 0.1-1 ms for the ZTF schema); splitting the frame here
lets :mod:`broker_filter.streams.codec` cache the parsed schemas by the header's schema text and hand
only the record bytes to ``fastavro.schemaless_reader``. The archive source uses the same
split to cut a multi-record file into the one-record payloads that travel on Kafka.

Framing follows the Avro 1.11 specification, "Object Container Files".
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import cramjam

from broker_filter.streams.alert import DecodeError

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MAX_HEADER_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class ContainerHeader:
    """What a container file says about itself; ``end`` is the offset of its first block."""

    schema_json: bytes
    codec: str
    sync: bytes
    end: int


@dataclass(frozen=True, slots=True)
class Block:
    """One data block: ``count`` records in ``data`` (already decompressed)."""

    count: int
    data: bytes
    offset: int  # where the block starts in the file, for error messages


def read_long(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode one zig-zag varint at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated", f"varint runs past the end at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise DecodeError("not_avro", f"varint longer than 10 bytes at byte {pos}")


def write_long(value: int) -> bytes:
    """Encode one zig-zag varint."""
    datum = (value << 1) ^ (value >> 63)
    out = bytearray()
    while datum & ~0x7F:
        out.append((datum & 0x7F) | 0x80)
        datum >>= 7
    out.append(datum)
    return bytes(out)


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = read_long(buf, pos)
    if size < 0 or pos + size > len(buf):
        raise DecodeError("truncated", f"byte string of {size} bytes runs past the end at byte {pos}")
    return bytes(buf[pos : pos + size]), pos + size


def is_container(payload: bytes) -> bool:
    return payload[:4] == MAGIC


def read_header(buf: bytes) -> ContainerHeader:
    """Parse the magic, the metadata map and the sync marker."""
    if not is_container(buf):
        raise DecodeError("not_avro", "no Avro container magic 'Obj\\x01'")
    pos = 4
    meta: dict[str, bytes] = {}
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's byte size
            count = -count
            _, pos = read_long(buf, pos)
        if len(meta) + count > MAX_HEADER_ENTRIES:
            raise DecodeError("not_avro", "container header has an implausible metadata map")
        for _ in range(count):
            key, pos = _read_bytes(buf, pos)
            value, pos = _read_bytes(buf, pos)
            meta[key.decode("utf-8", "replace")] = value
    if pos + SYNC_SIZE > len(buf):
        raise DecodeError("truncated", "container header ends before its sync marker")
    if "avro.schema" not in meta:
        raise DecodeError("unknown_schema", "container header carries no avro.schema")
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace") or "null"
    return ContainerHeader(meta["avro.schema"], codec, bytes(buf[pos : pos + SYNC_SIZE]), pos + SYNC_SIZE)


def decompress(codec: str, data: bytes) -> bytes:
    """Undo a block codec; snappy blocks end with a 4-byte CRC32 of the raw data."""
    try:
        if codec == "null":
            return data
        if codec == "deflate":
            return zlib.decompress(data, -15)
        if codec == "snappy":
            return bytes(cramjam.snappy.decompress_raw(data[:-4]))
        if codec == "zstandard":
            return bytes(cramjam.zstd.decompress(data))
        if codec == "bzip2":
            return bz2.decompress(data)
        if codec == "xz":
            return lzma.decompress(data)
    except (zlib.error, OSError, ValueError, lzma.LZMAError, cramjam.DecompressionError) as exc:
        raise DecodeError("invalid_value", f"{codec} block does not decompress: {exc}") from None
    raise DecodeError("unknown_schema", f"unsupported container codec {codec!r}")


def iter_blocks(buf: bytes, header: ContainerHeader) -> Iterator[Block]:
    """Yield the file's blocks; a damaged block raises DecodeError after the good ones."""
    pos = header.end
    while pos < len(buf):
        start = pos
        count, pos = read_long(buf, pos)
        size, pos = read_long(buf, pos)
        if count < 0 or size < 0 or pos + size + SYNC_SIZE > len(buf):
            raise DecodeError("truncated", f"block at byte {start} runs past the end of the file")
        data = bytes(buf[pos : pos + size])
        pos += size
        if buf[pos : pos + SYNC_SIZE] != header.sync:
            raise DecodeError("not_avro", f"block at byte {start} does not end with the file's sync marker")
        pos += SYNC_SIZE
        yield Block(count, decompress(header.codec, data), start)


def header_bytes(schema_json: bytes, sync: bytes = b"\x00" * SYNC_SIZE) -> bytes:
    """The header of an uncompressed container file with this writer schema."""
    meta = write_long(2)
    for key, value in ((b"avro.schema", schema_json), (b"avro.codec", b"null")):
        meta += write_long(len(key)) + key + write_long(len(value)) + value
    return MAGIC + meta + write_long(0) + sync


def single_record_container(schema_json: bytes, record: bytes, sync: bytes = b"\x00" * SYNC_SIZE) -> bytes:
    """A one-record, uncompressed container file: the shape of a ZTF Kafka message."""
    return container_file(schema_json, [record], sync)


def container_file(schema_json: bytes, records: list[bytes], sync: bytes = b"\x00" * SYNC_SIZE) -> bytes:
    """An uncompressed container file holding ``records`` (already encoded) in one block."""
    body = b"".join(records)
    return header_bytes(schema_json, sync) + write_long(len(records)) + write_long(len(body)) + body + sync
