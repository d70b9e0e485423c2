"""On-disk shard format, and the exceptions of shard I/O.

A shard file holds fragment ``index`` of every segment of one stripe set::

    header   b"APSHARD\\x01" | u32 n | n bytes JSON | u32 crc32c(JSON)
    segment  fragment bytes | u32 crc32c(fragment)          (repeated; all but the last are
                                                             ``frag`` bytes long)
    trailer  b"APSHEND\\x01" | u64 segments | u32 digest | u32 crc32c(previous 20 bytes)

The header JSON names the stripe set (``sid``), ``index``, ``pool``, ``seg`` (segment size)
and ``frag`` (fragment size of a full segment), so segment ``s`` starts at
``header_len + s * (frag + 4)`` and a ranged read touches only the segments it needs. The
trailer's ``digest`` is the crc32c of the sequence of fragment CRCs (as stored), so it covers
every byte without hashing the data twice; scrub checks it, and its presence proves the file
was completely written. All integers are big-endian.
"""

from __future__ import annotations

import json
import struct

from ..crc32c import crc32c

MAGIC = b"APSHARD\x01"
TRAILER_MAGIC = b"APSHEND\x01"
TRAILER = struct.Struct(">8sQI")
TRAILER_LEN = TRAILER.size + 4
CRC = struct.Struct(">I")


class ShardError(Exception):
    """A shard could not be read or written. ``sid``/``index`` name it."""

    def __init__(self, sid: str, index: int, msg: str):
        super().__init__(f"shard {sid}.{index}: {msg}")
        self.sid, self.index = sid, index


class ShardNotFound(ShardError):
    pass


class ShardCorrupt(ShardError):
    """A checksum failed, or the file is truncated or names another shard."""


def encode_header(meta: dict) -> bytes:
    body = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + CRC.pack(len(body)) + body + CRC.pack(crc32c(body))


def decode_header(buf: bytes) -> tuple[dict, int] | None:
    """(header dict, header length) from the first bytes of a file; None if ``buf`` is too short
    to hold the whole header. Raises ValueError when it is not a valid header."""
    if len(buf) < 12:
        return None
    if buf[:8] != MAGIC:
        raise ValueError("bad magic")
    (n,) = CRC.unpack_from(buf, 8)
    if n > 65536:
        raise ValueError("header too long")
    end = 12 + n + 4
    if len(buf) < end:
        return None
    body = bytes(buf[12:12 + n])
    if CRC.unpack_from(buf, 12 + n)[0] != crc32c(body):
        raise ValueError("header checksum mismatch")
    return json.loads(body), end


def encode_trailer(segments: int, digest: int) -> bytes:
    t = TRAILER.pack(TRAILER_MAGIC, segments, digest)
    return t + CRC.pack(crc32c(t))


def decode_trailer(buf: bytes) -> tuple[int, int]:
    """(segments, digest). Raises ValueError on a bad trailer."""
    if len(buf) != TRAILER_LEN or CRC.unpack_from(buf, TRAILER.size)[0] != crc32c(
            buf[:TRAILER.size]):
        raise ValueError("bad trailer")
    magic, segments, digest = TRAILER.unpack_from(buf)
    if magic != TRAILER_MAGIC:
        raise ValueError("bad trailer magic")
    return segments, digest


def segment_count(file_size: int, header_len: int, frag: int) -> int:
    """Segments in a complete shard file of ``file_size`` bytes (see the layout above)."""
    body = file_size - header_len - TRAILER_LEN
    return -(-body // (frag + 4)) if body > 0 else 0
