"""Request bodies: reading them from ASGI, decoding aws-chunked, hashing, storing, verifying.

Framing: hypercorn (h11) already undoes ``Transfer-Encoding: chunked`` and enforces
``Content-Length``; a client that closes early shows up as ``http.disconnect``
(:class:`ClientDisconnected`). ``aws-chunked`` (``x-amz-content-sha256: STREAMING-*``) is
decoded here with :mod:`appliance.s3.chunked`, which also checks chunk signatures and collects
trailers. A body that stalls for ``timeout`` seconds fails with RequestTimeout.

:func:`store_body` is the PutObject/UploadPart data path: ASGI receive -> (aws-chunked decode)
-> ~1 MiB pieces -> :class:`~appliance.s3.hashing.HashThread` (MD5 and the checksums; small
bodies are hashed inline) and
``Namespace.write_data`` at the same time; the digests are verified after the data is stored
and before anything is committed, and the extent is discarded on any failure.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..namespace import Namespace
from ..store import Extent
from .checksums import ExpectedChecksum, decode_content_md5, select_checksum, verify_digest
from .chunked import AwsChunkedDecoder
from .errors import S3Error
from . import hashing
from .hashing import hasher_for
from .http_compat import APP_QUEUE_SIZE, RECV_SIZE
from .sigv4 import AuthResult

PIECE_SIZE = 1 << 20
"""Body bytes are handed to the hasher and the store in pieces of about this size."""


class ClientDisconnected(Exception):
    """The client closed the connection before the request body was complete."""


def _int_header(headers: dict[str, str], name: str) -> int | None:
    v = headers.get(name)
    if v is None:
        return None
    v = v.strip()
    if not v.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer",
                      ArgumentName=name, ArgumentValue=v)
    return int(v)


class BodyReader:
    """The payload of one request, read at most once.

    ``length``: payload bytes announced (``x-amz-decoded-content-length`` for aws-chunked,
    else Content-Length; None for chunked transfer without either). ``trailers``: aws-chunked
    trailers (lower-case names), complete once the payload was read to its end.
    """

    def __init__(self, receive, headers: dict[str, str], timeout: float = 60.0):
        self._receive = receive
        self._headers = headers
        self.timeout = timeout
        self.content_length = _int_header(headers, "content-length")
        self.chunked_transfer = "chunked" in headers.get("transfer-encoding", "").lower()
        self.decoder: AwsChunkedDecoder | None = None
        self.length = None if self.chunked_transfer else self.content_length or 0
        self.auth: AuthResult | None = None
        self.trailers: dict[str, str] = {}
        self.received = 0
        """Bytes received off the wire so far."""
        self.complete = False
        """The whole body has been received (ASGI more_body=False)."""
        self.started = False

    def set_auth(self, auth: AuthResult) -> None:
        """Called once the request is authenticated: sets up aws-chunked decoding for
        ``STREAMING-*`` payloads and the x-amz-content-sha256 check of :meth:`read_all`."""
        self.auth = auth
        if auth.streaming:
            decoded = _int_header(self._headers, "x-amz-decoded-content-length")
            self.decoder = AwsChunkedDecoder.from_auth(auth, decoded)
            self.length = decoded

    @property
    def has_body(self) -> bool:
        return self.chunked_transfer or bool(self.content_length)

    async def _wire(self) -> bytes | None:
        if self.complete:
            return None
        # A bare CancelScope: move_on_after's context-manager wrapper costs more per message.
        with trio.CancelScope(deadline=trio.current_time() + self.timeout) as cs:
            msg = await self._receive()
        if cs.cancelled_caught:
            raise S3Error("RequestTimeout")
        if msg["type"] == "http.disconnect":
            raise ClientDisconnected()
        data = msg.get("body", b"")
        self.received += len(data)
        if not msg.get("more_body", False):
            self.complete = True
        return data

    async def stream(self, piece_size: int = PIECE_SIZE) -> AsyncIterator[bytes]:
        """The payload in pieces of at most ``piece_size`` bytes (close to it but for the last
        one): received pieces are joined with a single copy, never split, except a received
        piece larger than ``piece_size`` on its own.

        Raises ClientDisconnected, S3Error RequestTimeout, sigv4.S3AuthError from the
        aws-chunked decoder (SignatureDoesNotMatch, IncompleteBody, ...), S3Error
        IncompleteBody when the payload length differs from the announced one."""
        if self.started:
            raise RuntimeError("request body already read")
        self.started = True
        parts: list = []
        have = 0
        total = 0
        decoder = self.decoder
        while True:
            data = await self._wire()
            if data is None:
                break
            for p in (decoder.feed(data) if decoder is not None else (data,)):
                n = len(p)
                if not n:
                    continue
                if have + n > piece_size and parts:
                    total += have
                    yield _join(parts)
                    parts, have = [], 0
                while n > piece_size:  # only if the server hands out huge pieces
                    total += piece_size
                    yield bytes(p[:piece_size])
                    p, n = p[piece_size:], n - piece_size
                parts.append(p)
                have += n
        if decoder is not None:
            decoder.close()
            self.trailers = dict(decoder.trailers)
        total += have
        if self.length is not None and total != self.length:
            raise S3Error("IncompleteBody")
        if parts:
            yield _join(parts)

    async def read_all(self, limit: int) -> bytes:
        """The whole payload (for XML bodies), verified against a signed x-amz-content-sha256.

        Raises S3Error MaxMessageLengthExceeded over ``limit`` bytes, XAmzContentSHA256Mismatch
        (through sigv4.S3AuthError), and what :meth:`stream` raises."""
        if self.length is not None and self.length > limit:
            raise S3Error("MaxMessageLengthExceeded")
        out = bytearray()
        async for piece in self.stream():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxMessageLengthExceeded")
        body = bytes(out)
        if self.auth is not None:
            self.auth.verify_payload(hashlib.sha256(body).digest())
        return body

    async def drain(self, limit: int) -> bool:
        """Read and drop up to ``limit`` more wire bytes; True when the body ended (so the
        connection can carry the next request)."""
        try:
            while not self.complete and self.received <= limit:
                await self._wire()
        except (ClientDisconnected, S3Error):
            return False
        return self.complete


def _join(parts: list) -> bytes:
    if len(parts) == 1 and type(parts[0]) is bytes:
        return parts[0]
    return b"".join(parts)


@dataclass
class StoredBody:
    """What :func:`store_body` stored and computed: ``md5`` raw digest (the ETag source),
    ``checksums`` algorithm -> base64 digest for the requested/announced flexible checksums,
    ``digests`` algorithm -> raw digest for all of them."""

    extent: Extent
    size: int
    md5: bytes
    checksums: dict[str, str] = field(default_factory=dict)
    digests: dict[str, bytes] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return self.md5.hex()


def body_footprint(length: int | None, ns: Namespace) -> int:
    """Memory storing a body of ``length`` bytes (None: unknown) holds at most: the store's
    write buffers, the pieces queued for the hashing thread and the socket reads the HTTP
    server holds ahead of us. 0 for a body small enough to be kept inline."""
    n = ns.write_footprint(length)
    if not n:
        return 0
    return (n + hashing.queue_footprint(length, PIECE_SIZE)
            + (APP_QUEUE_SIZE + 1) * RECV_SIZE)


async def store_body(req, ns: Namespace, *, max_size: int,
                     checksum_algorithm: str | None = None,
                     admit: Callable[[int], Awaitable[None]] | None = None) -> StoredBody:
    """Store the request payload and verify it; returns the uncommitted extent and digests.

    ``max_size``: larger payloads fail with EntityTooLarge (before reading when the length is
    announced). ``checksum_algorithm``: a flexible checksum to compute even if the request did
    not send one (a multipart upload's algorithm). ``admit(nbytes)`` is awaited with the
    memory the upload may hold (:func:`body_footprint`) once the headers are found valid and
    before any of the body is read (Gateway.admit). Verifies, after storing and before
    returning: the decoded length (IncompleteBody), a signed x-amz-content-sha256
    (XAmzContentSHA256Mismatch), Content-MD5 (InvalidDigest up front, BadDigest), an
    ``x-amz-checksum-*`` header or trailer (InvalidRequest up front, BadDigest). On any failure
    the stored data is discarded and nothing is left referenced.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
    """
    body: BodyReader = req.body
    headers = req.headers
    if body.content_length is None and not body.chunked_transfer:
        raise S3Error("MissingContentLength")
    if body.length is not None and body.length > max_size:
        raise S3Error("EntityTooLarge", ProposedSize=str(body.length),
                      MaxSizeAllowed=str(max_size))
    md5_header = headers.get("content-md5")
    want_md5 = decode_content_md5(md5_header) if md5_header is not None else None
    expected: ExpectedChecksum | None = select_checksum(headers.items())
    algorithms = ["MD5"]
    sha_hex = req.auth.payload_sha256 if req.auth is not None else None
    if sha_hex is not None:
        algorithms.append("SHA256")
    flexible = [a for a in (expected.algorithm if expected else None, checksum_algorithm) if a]
    algorithms += flexible

    if admit is not None:
        await admit(body_footprint(body.length, ns))
    hasher = hasher_for(algorithms, body.length)
    size = 0

    async def payload():
        nonlocal size
        async for piece in body.stream():
            size += len(piece)
            if size > max_size:
                raise S3Error("EntityTooLarge", MaxSizeAllowed=str(max_size))
            await hasher.feed(piece)
            yield piece

    extent = None
    try:
        extent = await ns.write_data(payload())
        digests = await hasher.finish()
        if sha_hex is not None:
            req.auth.verify_payload(digests["SHA256"])
        if want_md5 is not None:
            verify_digest("MD5", want_md5, digests["MD5"])
        if expected is not None:
            verify_digest(expected.algorithm, expected.from_trailers(body.trailers),
                          digests[expected.algorithm])
    except BaseException:
        hasher.close()
        if extent is not None:
            with trio.CancelScope(shield=True):
                await ns.discard([extent])
        raise
    return StoredBody(extent, size, digests["MD5"],
                      {a: base64.b64encode(digests[a]).decode() for a in flexible},
                      digests)
