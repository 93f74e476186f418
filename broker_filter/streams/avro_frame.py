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
MAX_BLOCK_BYTES = 64 * 1024 * 1024  # the default of [limits] max_decoded_bytes


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


def decompress(codec: str, data: bytes, max_bytes: int = MAX_BLOCK_BYTES) -> bytes:
    """Undo a block codec, never inflating past ``max_bytes`` (a DecodeError ``too_large``).

    A 36 KB bzip2 block can hold 12 GiB: each codec stops at the cap (or refuses a declared
    size above it) instead of inflating whole. Snappy blocks end with a 4-byte CRC32 of the
    raw data.
    """
    try:
        if codec == "null":
            return data
        if codec == "deflate":
            return _capped(zlib.decompressobj(-15).decompress(data, max_bytes + 1), codec, max_bytes)
        if codec == "snappy":
            _declared(int(cramjam.snappy.decompress_raw_len(data[:-4])), codec, max_bytes)
            return bytes(cramjam.snappy.decompress_raw(data[:-4]))
        if codec == "zstandard":
            return _zstd(data, max_bytes)
        if codec == "bzip2":
            return _capped(bz2.BZ2Decompressor().decompress(data, max_bytes + 1), codec, max_bytes)
        if codec == "xz":
            return _capped(lzma.LZMADecompressor().decompress(data, max_bytes + 1), codec, max_bytes)
    except (zlib.error, OSError, ValueError, lzma.LZMAError, cramjam.DecompressionError) as exc:
        raise DecodeError("invalid_value", f"{codec} block does not decompress: {exc}") from None
    raise DecodeError("unknown_schema", f"unsupported container codec {codec!r}")


def _capped(out: bytes, codec: str, max_bytes: int) -> bytes:
    if len(out) > max_bytes:
        raise DecodeError("too_large", f"{codec} block inflates past {max_bytes} bytes")
    return out


def _declared(size: int, codec: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise DecodeError("too_large", f"{codec} block declares {size} bytes > {max_bytes}")


def _zstd(data: bytes, max_bytes: int) -> bytes:
    """A zstd frame: its declared content size checked first; without one, inflated into a bounded buffer."""
    size = _zstd_content_size(data)
    if size is not None:
        _declared(size, "zstandard", max_bytes)
        return bytes(cramjam.zstd.decompress(data))
    out = bytearray(max_bytes)
    try:
        written = cramjam.zstd.decompress_into(data, out)
    except cramjam.DecompressionError as exc:
        raise DecodeError("too_large", f"zstandard block inflates past {max_bytes} bytes ({exc})") from None
    return bytes(out[:written])


def _zstd_content_size(data: bytes) -> int | None:
    """Frame_Content_Size of a zstd frame header (RFC 8878, 3.1.1.1), or None where the frame omits it."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = data[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    field = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if field == 0:
        return None
    start = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    raw = data[start:start + field]
    if len(raw) < field:
        return None
    value = int.from_bytes(raw, "little")
    return value + 256 if field == 2 else value


def iter_blocks(buf: bytes, header: ContainerHeader, max_bytes: int = MAX_BLOCK_BYTES) -> Iterator[Block]:
    """Yield the file's blocks, each inflated to at most ``max_bytes``; a damaged block raises
    DecodeError after the good ones."""
    for count, start, data in _raw_blocks(buf, header):
        yield Block(count, decompress(header.codec, data, max_bytes), start)


def count_records(buf: bytes, header: ContainerHeader, stop_above: int) -> int:
    """Records the file declares, read from its block headers without inflating any block;
    counting stops once it passes ``stop_above`` (a message must hold one alert: refusing a
    250,000-record message must not cost decoding them)."""
    total = 0
    for count, _, _ in _raw_blocks(buf, header):
        total += count
        if total > stop_above:
            break
    return total


def _raw_blocks(buf: bytes, header: ContainerHeader) -> Iterator[tuple[int, int, bytes]]:
    """(record count, byte offset, still-compressed data) of each block."""
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
        yield count, start, data


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
