"""Object checksums of the S3 gateway: flexible checksums, Content-MD5, ETags.

AWS SDKs now send a checksum with every upload, in a header
(``x-amz-checksum-crc32: BASE64``) or as an aws-chunked trailer
(``x-amz-trailer: x-amz-checksum-crc32``), and S3 must verify it and store it
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html).
Algorithms and their digests (big-endian for the CRCs, base64 on the wire):

=========== ======= =====================================================
CRC32       4 B     zlib's CRC-32 (ISO-HDLC)
CRC32C      4 B     Castagnoli, ISA-L via :mod:`appliance.crc32c`
CRC64NVME   8 B     CRC-64/NVME (reflected poly 0xAD93D23594C93659, init
                    and xorout all ones), ``crcmod`` C extension
SHA1        20 B    hashlib
SHA256      32 B    hashlib
MD5         16 B    hashlib; ``Content-MD5`` and the ETag, not a flexible
                    checksum
=========== ======= =====================================================

Throughput on this hardware (one core): CRC32 ~4 GB/s, CRC32C ~2 GB/s
(software), SHA256 ~1.8 GB/s, SHA1 ~1.9 GB/s, MD5 ~0.74 GB/s, CRC64NVME
~0.45 GB/s.  hashlib releases the GIL for buffers of 2048 bytes and more, so
:func:`update_in_thread` lets MD5 run beside the event loop; crcmod and crc32c
keep the GIL (short for CRC32/CRC32C, about 2 ms per MiB for CRC64NVME).

Multipart uploads: :func:`composite_checksum` (checksum of the part
checksums, ``-N`` suffix, type COMPOSITE), :func:`full_object_crc` (the CRC of
the whole object combined from the part CRCs, type FULL_OBJECT) and
:func:`multipart_etag`.

Errors are :class:`appliance.s3.sigv4.S3AuthError` (400): ``InvalidRequest``
for unusable checksum headers, ``InvalidDigest`` for a bad ``Content-MD5``,
``BadDigest`` when data and checksum differ, ``MalformedTrailerError`` for a
declared trailer that did not come.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import crc32c as _crc32c
import crcmod
import trio

from appliance.s3.sigv4 import S3AuthError

__all__ = [
    "ALGORITHMS",
    "DIGEST_SIZES",
    "ExpectedChecksum",
    "Hasher",
    "MultiHasher",
    "algorithm_for_header",
    "combine_crc",
    "composite_checksum",
    "decode_checksum",
    "decode_content_md5",
    "full_object_crc",
    "header_name",
    "multipart_etag",
    "new_hasher",
    "select_checksum",
    "update_in_thread",
    "verify_digest",
]

#: The flexible checksum algorithms, as spelled in ``x-amz-sdk-checksum-algorithm``.
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
#: Digest length in bytes of every algorithm this module knows.
DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32, "MD5": 16}

# crcmod's initCrc is the register value *after* the xorOut, i.e. init ^ xorOut;
# CRC-64/NVME has init = xorOut = 2**64-1, hence 0.  Checked against the
# catalogue check value crc(b"123456789") = 0xAE8B14860A799888 in the tests.
_crc64nvme = crcmod.mkCrcFun(0x1AD93D23594C93659, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

# Reflected generator polynomials, for combining CRCs (see combine_crc).
_REFLECTED_POLY = {"CRC32": 0xEDB88320, "CRC32C": 0x82F63B78, "CRC64NVME": 0x9A6C9329AC4BC9B5}
_CRC_UPDATE = {
    "CRC32": zlib.crc32,
    "CRC32C": _crc32c.crc32c,
    "CRC64NVME": _crc64nvme,
}


def _canonical(algorithm: str) -> str:
    name = algorithm.upper()
    if name not in DIGEST_SIZES:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    return name


def header_name(algorithm: str) -> str:
    """``"CRC32"`` -> ``"x-amz-checksum-crc32"`` (``"MD5"`` -> ``"content-md5"``)."""
    name = _canonical(algorithm)
    return "content-md5" if name == "MD5" else f"x-amz-checksum-{name.lower()}"


def algorithm_for_header(name: str) -> str | None:
    """``"x-amz-checksum-crc64nvme"`` -> ``"CRC64NVME"``; ``None`` if not a flexible checksum header."""
    name = name.strip().lower()
    if name.startswith("x-amz-checksum-"):
        algorithm = name[len("x-amz-checksum-") :].upper()
        if algorithm in ALGORITHMS:
            return algorithm
    return None


# ---------------------------------------------------------------------------
# Streaming hashers


class Hasher:
    """Running checksum of one algorithm.

    Not thread-safe: feed one hasher from one thread at a time (which
    :func:`update_in_thread` does).

    Attributes:
        algorithm: ``"CRC32"``, ``"CRC32C"``, ``"CRC64NVME"``, ``"SHA1"``,
            ``"SHA256"`` or ``"MD5"``.
        digest_size: digest length in bytes.
    """

    __slots__ = ("algorithm", "digest_size", "_hash", "_crc", "_update")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = _canonical(algorithm)
        self.digest_size = DIGEST_SIZES[self.algorithm]
        self._crc = 0
        if self.algorithm in _CRC_UPDATE:
            self._hash = None
            self._update = _CRC_UPDATE[self.algorithm]
        else:
            # usedforsecurity=False keeps MD5/SHA1 usable on FIPS systems:
            # these are integrity checks, not security.
            self._hash = hashlib.new(self.algorithm.lower(), usedforsecurity=False)
            self._update = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` (any bytes-like object) to the checksum."""
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._crc = self._update(data, self._crc)

    def digest(self) -> bytes:
        """The checksum so far: ``digest_size`` bytes, big-endian for CRCs."""
        if self._hash is not None:
            return self._hash.digest()
        return self._crc.to_bytes(self.digest_size, "big")

    def b64(self) -> str:
        """The checksum so far in base64, as S3 headers carry it."""
        return base64.b64encode(self.digest()).decode("ascii")

    def hexdigest(self) -> str:
        """The checksum so far in lower-case hex (the ETag form for MD5)."""
        return self.digest().hex()

    def verify(self, expected: bytes | str) -> None:
        """Check the data hashed so far against the client's checksum.

        Args:
            expected: the raw digest, or its base64 text (as in the header).

        Raises:
            S3AuthError: ``InvalidRequest``/``InvalidDigest`` (400) if the base64
                text is unusable; ``BadDigest`` (400) if it does not match.
        """
        if isinstance(expected, str):
            expected = decode_checksum(self.algorithm, expected)
        verify_digest(self.algorithm, expected, self.digest())


def new_hasher(algorithm: str) -> Hasher:
    """A fresh :class:`Hasher`; ``algorithm`` is case-insensitive.

    Raises:
        ValueError: unknown algorithm (a programming error; client input goes
            through :func:`select_checksum` first).
    """
    return Hasher(algorithm)


class MultiHasher:
    """Several hashers fed the same data, e.g. MD5 for the ETag plus the
    client's CRC32.

    Args:
        algorithms: algorithm names; duplicates are ignored.
    """

    def __init__(self, algorithms: Iterable[str]) -> None:
        self.hashers: dict[str, Hasher] = {}
        for algorithm in algorithms:
            name = _canonical(algorithm)
            self.hashers.setdefault(name, Hasher(name))

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` to every checksum."""
        for hasher in self.hashers.values():
            hasher.update(data)

    def update_many(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """Add each piece in order to every checksum (piece-major, so a piece is
        still in the CPU cache for the next hasher)."""
        hashers = list(self.hashers.values())
        for piece in pieces:
            for hasher in hashers:
                hasher.update(piece)

    def __getitem__(self, algorithm: str) -> Hasher:
        return self.hashers[_canonical(algorithm)]

    def digests(self) -> dict[str, bytes]:
        """Algorithm -> digest so far."""
        return {name: hasher.digest() for name, hasher in self.hashers.items()}


async def update_in_thread(
    hashers: MultiHasher | Iterable[Hasher],
    pieces: Sequence[bytes | bytearray | memoryview],
    *,
    limiter: trio.CapacityLimiter | None = None,
) -> None:
    """Feed a batch of pieces to hashers in a worker thread.

    MD5 of a 1 GiB upload costs ~1.4 s of CPU; hashlib releases the GIL for
    pieces of 2048 bytes or more, so doing it in a thread lets the event loop
    keep receiving (and e.g. erasure-coding) meanwhile.  Typical use: gather
    ~1-4 MiB of pieces, then ``nursery.start_soon(update_in_thread, h, batch)``
    or await it while the next batch arrives.  Batches must be applied in
    order: await one before starting the next on the same hashers.  To use two
    cores, give MD5 and the CRC separate calls running concurrently.

    Args:
        hashers: a :class:`MultiHasher` or hashers.
        pieces: bytes-like objects, not mutated until this returns.
        limiter: trio capacity limiter for the thread (default: trio's).

    Not cancellable once started: the thread mutates the hashers, and
    abandoning it would leave them in an unknown state.
    """
    if isinstance(hashers, MultiHasher):
        hashers = list(hashers.hashers.values())
    else:
        hashers = list(hashers)

    def run() -> None:
        for piece in pieces:
            for hasher in hashers:
                hasher.update(piece)

    await trio.to_thread.run_sync(run, limiter=limiter)


# ---------------------------------------------------------------------------
# Client-supplied values


def decode_checksum(algorithm: str, value: str) -> bytes:
    """Decode a client's base64 checksum (header or trailer value).

    Args:
        algorithm: e.g. ``"CRC32"``; ``"MD5"`` for ``Content-MD5``.
        value: the base64 text.

    Returns:
        The raw digest (``DIGEST_SIZES[algorithm]`` bytes).

    Raises:
        S3AuthError: ``InvalidRequest`` (400) "Value for x-amz-checksum-crc32
            header is invalid." when it is not strict base64 of the right
            length (``InvalidDigest`` for MD5, as AWS answers for a bad
            ``Content-MD5``).
    """
    name = _canonical(algorithm)
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) != DIGEST_SIZES[name]:
        if name == "MD5":
            raise S3AuthError("InvalidDigest", "The Content-MD5 you specified was not valid.")
        raise S3AuthError("InvalidRequest", f"Value for {header_name(name)} header is invalid.")
    return raw


def decode_content_md5(value: str) -> bytes:
    """Decode a ``Content-MD5`` header to its 16 bytes (``InvalidDigest`` if bad)."""
    return decode_checksum("MD5", value)


def verify_digest(algorithm: str, expected: bytes, actual: bytes) -> None:
    """Compare the client's digest with the computed one.

    Raises:
        S3AuthError: ``BadDigest`` (400) with AWS's wording: "The CRC32 you
            specified did not match the calculated checksum." or, for MD5,
            "The Content-MD5 you specified did not match what we received."
    """
    name = _canonical(algorithm)
    if not hmac.compare_digest(expected, actual):
        if name == "MD5":
            message = "The Content-MD5 you specified did not match what we received."
        else:
            message = f"The {name} you specified did not match the calculated checksum."
        raise S3AuthError(
            "BadDigest",
            message,
            ExpectedDigest=base64.b64encode(expected).decode("ascii"),
            CalculatedDigest=base64.b64encode(actual).decode("ascii"),
        )


@dataclass(frozen=True)
class ExpectedChecksum:
    """The flexible checksum a request announced.

    Attributes:
        algorithm: e.g. ``"CRC32"``.
        value: the raw digest from the header, or ``None`` when it comes as a
            trailer (use :meth:`from_trailers` after decoding the body).
        trailer: ``True`` when announced by ``x-amz-trailer``.
    """

    algorithm: str
    value: bytes | None
    trailer: bool

    def from_trailers(self, trailers: Mapping[str, str]) -> bytes:
        """The raw digest, from the decoded body's trailers if it was a trailer.

        Raises:
            S3AuthError: ``MalformedTrailerError`` if the announced trailer is
                absent; ``InvalidRequest`` if its value is not valid base64.
        """
        if self.value is not None:
            return self.value
        text = trailers.get(header_name(self.algorithm))
        if text is None:
            raise S3AuthError(
                "MalformedTrailerError",
                "The request contained trailing data that was not well-formed or did not "
                f"conform to our published schema. ({header_name(self.algorithm)} missing)",
            )
        return decode_checksum(self.algorithm, text)


def select_checksum(headers: Iterable[tuple[str, str]]) -> ExpectedChecksum | None:
    """Find the flexible checksum a PutObject/UploadPart request announced.

    Args:
        headers: ``(lower-case name, value)`` pairs.

    Returns:
        ``None`` when the request carries no flexible checksum, else the
        algorithm and (header case) the decoded expected digest.

    Raises:
        S3AuthError: ``InvalidRequest`` (400) when more than one checksum is
            given, ``x-amz-trailer`` names something unsupported, a header
            value is not valid base64 of the right length, or
            ``x-amz-sdk-checksum-algorithm`` disagrees with what was sent.

    Rules from
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
    and the PutObject reference: one checksum per request, in a header or a
    trailer; ``x-amz-sdk-checksum-algorithm`` only names it.
    """
    found: list[tuple[str, str]] = []  # (algorithm, base64 or "" for trailer)
    announced: list[str] = []
    sdk_algorithm: str | None = None
    for name, value in headers:
        algorithm = algorithm_for_header(name)
        if algorithm is not None:
            found.append((algorithm, value))
            continue
        if name == "x-amz-trailer":
            for item in value.split(","):
                item = item.strip().lower()
                if not item:
                    continue
                trailer_algorithm = algorithm_for_header(item)
                if trailer_algorithm is None:
                    raise S3AuthError(
                        "InvalidRequest",
                        f"The value specified in the x-amz-trailer header is not supported: {item}",
                    )
                announced.append(trailer_algorithm)
        elif name == "x-amz-sdk-checksum-algorithm":
            sdk_algorithm = value.strip().upper()
    if len(found) + len(announced) > 1:
        raise S3AuthError(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    if found:
        expected = ExpectedChecksum(found[0][0], decode_checksum(*found[0]), trailer=False)
    elif announced:
        expected = ExpectedChecksum(announced[0], None, trailer=True)
    else:
        expected = None
    if sdk_algorithm is not None:
        if sdk_algorithm not in ALGORITHMS:
            raise S3AuthError("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
        if expected is None:
            raise S3AuthError(
                "InvalidRequest",
                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
                "or x-amz-trailer headers were found.",
            )
        if expected.algorithm != sdk_algorithm:
            raise S3AuthError("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    return expected


# ---------------------------------------------------------------------------
# Multipart


def composite_checksum(algorithm: str, part_digests: Sequence[bytes]) -> str:
    """COMPOSITE multipart checksum: ``base64(H(d1 || d2 || ...)) + "-N"``.

    Args:
        algorithm: any flexible algorithm.
        part_digests: raw digests of the parts, in part-number order.

    Returns:
        e.g. ``"oL1Xug==-3"``, the form S3 returns for a multipart object.

    https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
    """
    hasher = Hasher(algorithm)
    for digest in part_digests:
        hasher.update(digest)
    return f"{hasher.b64()}-{len(part_digests)}"


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """S3's multipart ETag: ``hex(md5(md5_1 || ... || md5_N)) + "-N"`` (no quotes)."""
    hasher = Hasher("MD5")
    for digest in part_md5s:
        hasher.update(digest)
    return f"{hasher.hexdigest()}-{len(part_md5s)}"


def _multmodp(a: int, b: int, poly: int, top: int) -> int:
    # a * b modulo the CRC polynomial, in the reflected bit order CRCs use
    # (the top bit is x^0).  Port of zlib's multmodp(), width-generic.
    product = 0
    mask = top
    while True:
        if a & mask:
            product ^= b
            if a & (mask - 1) == 0:
                return product
        mask >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


def _x_pow_8n(n: int, poly: int, top: int) -> int:
    # x^(8*n) mod p by repeated squaring: x^(2^k) for k = 3, 4, ... multiplied
    # in for every set bit of n.
    result = top  # x^0
    square = top >> 1  # x^1
    for _ in range(3):
        square = _multmodp(square, square, poly, top)  # x^2, x^4, x^8
    while n:
        if n & 1:
            result = _multmodp(square, result, poly, top)
        n >>= 1
        square = _multmodp(square, square, poly, top)
    return result


def combine_crc(algorithm: str, crc_a: bytes, crc_b: bytes, length_b: int) -> bytes:
    """CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``.

    Args:
        algorithm: ``"CRC32"``, ``"CRC32C"`` or ``"CRC64NVME"``.
        crc_a, crc_b: big-endian digests.
        length_b: length of B in bytes.

    Returns:
        Big-endian digest of the concatenation.  Cost O(width * log(length_b))
        big-int steps (tens of microseconds), independent of the data size.

    Works because the three CRCs are reflected with init = xorout = all ones,
    as zlib's crc32_combine() assumes.
    """
    name = _canonical(algorithm)
    if name not in _REFLECTED_POLY:
        raise S3AuthError("InvalidRequest", f"The FULL_OBJECT checksum type is not supported for {name}.")
    width = DIGEST_SIZES[name] * 8
    top = 1 << (width - 1)
    poly = _REFLECTED_POLY[name]
    a = int.from_bytes(crc_a, "big")
    b = int.from_bytes(crc_b, "big")
    if length_b == 0:
        return crc_a
    combined = _multmodp(_x_pow_8n(length_b, poly, top), a, poly, top) ^ b
    return combined.to_bytes(width // 8, "big")


def full_object_crc(algorithm: str, parts: Sequence[tuple[bytes, int]]) -> bytes:
    """FULL_OBJECT multipart checksum: the CRC of the whole object.

    Args:
        algorithm: ``"CRC32"``, ``"CRC32C"`` or ``"CRC64NVME"``.
        parts: ``(big-endian part CRC, part length in bytes)`` in part order.

    Returns:
        Big-endian digest of the concatenated parts (no ``-N`` suffix).

    Raises:
        S3AuthError: ``InvalidRequest`` for SHA1/SHA256, which cannot be
            combined (AWS only offers FULL_OBJECT for CRCs).
    """
    name = _canonical(algorithm)
    if name not in _REFLECTED_POLY:
        raise S3AuthError("InvalidRequest", f"The FULL_OBJECT checksum type is not supported for {name}.")
    result = Hasher(name).digest()  # the CRC of nothing
    for crc, length in parts:
        result = combine_crc(name, result, crc, length)
    return result
