"""Incremental decoder for S3 ``aws-chunked`` request bodies.

When ``x-amz-content-sha256`` is one of the ``STREAMING-*`` values the body is
not the object but a framing of it (``Content-Encoding: aws-chunked``):

``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
    ``<hex-size>;chunk-signature=<sig>\\r\\n<data>\\r\\n`` ... then
    ``0;chunk-signature=<sig>\\r\\n\\r\\n``.  Each signature chains from the
    previous one (the first from the request's seed signature):
    ``HMAC(signing-key, "AWS4-HMAC-SHA256-PAYLOAD\\n" + timestamp + "\\n" +
    scope + "\\n" + previous-signature + "\\n" + sha256("") + "\\n" +
    sha256(data))``.
    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``
    the same chunks, then trailer lines ``name:value\\r\\n``, a
    ``x-amz-trailer-signature:<sig>\\r\\n`` line and ``\\r\\n``.  The trailer
    signature is ``HMAC(signing-key, "AWS4-HMAC-SHA256-TRAILER\\n" + timestamp +
    "\\n" + scope + "\\n" + last-chunk-signature + "\\n" +
    sha256("name:value\\n" for each trailer))``.
    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html
``STREAMING-UNSIGNED-PAYLOAD-TRAILER``
    ``<hex-size>\\r\\n<data>\\r\\n`` ..., ``0\\r\\n``, trailer lines such as
    ``x-amz-checksum-crc32:BASE64\\r\\n``, then ``\\r\\n`` (what botocore and the
    other AWS SDKs send by default over HTTPS).

The decoder is *push* style so that it fits an ASGI receive loop::

    decoder = AwsChunkedDecoder.from_auth(auth, decoded_content_length=n)
    async for data in body:
        for piece in decoder.feed(data):
            ...  # hash it, store it
    decoder.close()               # raises if the body was truncated
    decoder.trailers              # {"x-amz-checksum-crc32": "..."}

Costs: payload bytes are never copied; :meth:`AwsChunkedDecoder.feed` returns
``memoryview`` slices of the object it was given.  Only chunk-header and
trailer lines are buffered (bounded).  For the signed modes every payload byte
goes through SHA-256 (about 1.8 GB/s here), which the protocol makes
unavoidable.

Trust: a piece is returned as soon as it arrives, before the signature of the
chunk it belongs to can be checked (that needs the whole chunk).  A bad chunk
signature raises on the ``feed`` that completes the chunk, so every piece must
be treated as provisional until :meth:`AwsChunkedDecoder.close` returns; the
application must not commit the object before that.

Errors are :class:`appliance.s3.sigv4.S3AuthError` with these codes:

* ``SignatureDoesNotMatch`` (403): a chunk or trailer signature is wrong.
* ``IncompleteBody`` (400): the body ended early, or its decoded length is not
  ``x-amz-decoded-content-length``.
* ``InvalidArgument`` (400): chunk framing is malformed (bad hex size, missing
  CRLF or chunk signature, bytes after the end).
* ``MalformedTrailerError`` (400): trailer section malformed, too large, or
  missing ``x-amz-trailer-signature`` in the signed-trailer mode.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from appliance.s3.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    S3AuthError,
)

if TYPE_CHECKING:
    from appliance.s3.sigv4 import AuthResult

__all__ = ["STREAMING_MODES", "AwsChunkedDecoder", "chunk_signature", "trailer_signature"]

#: The ``x-amz-content-sha256`` values whose body this module decodes.
STREAMING_MODES = frozenset({STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER})

# Limits on what is buffered.  A chunk header is at most 16 hex digits plus
# ";chunk-signature=" plus 64 hex digits; anything near these limits is abuse.
MAX_LINE = 4096
MAX_TRAILER_BYTES = 16384

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIGNATURE_EXT = re.compile(rb"chunk-signature=([0-9a-f]{64})")
_TRAILER_SIGNATURE = "x-amz-trailer-signature"

# Decoder states.
_HEADER = "header"  # reading "<hex-size>[;chunk-signature=...]\r\n"
_DATA = "data"  # inside chunk data
_DATA_END = "data-end"  # expecting the CRLF after chunk data
_TRAILER = "trailer"  # reading trailer lines up to an empty line
_DONE = "done"


def chunk_signature(
    signing_key: bytes, timestamp: str, scope: str, previous_signature: str, chunk_sha256_hex: str
) -> str:
    """Signature of one aws-chunked chunk (64 lower-case hex).

    Args:
        signing_key: 32-byte SigV4 signing key of the request.
        timestamp: ``"YYYYMMDDTHHMMSSZ"`` of the request.
        scope: ``"YYYYMMDD/REGION/s3/aws4_request"``.
        previous_signature: the seed signature for the first chunk, else the
            previous chunk's signature.
        chunk_sha256_hex: SHA-256 of the chunk data (empty for the final chunk).

    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
    """
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            timestamp,
            scope,
            previous_signature,
            EMPTY_SHA256,
            chunk_sha256_hex,
        ]
    )
    return hmac.new(signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()


def trailer_signature(
    signing_key: bytes, timestamp: str, scope: str, previous_signature: str, trailers: dict[str, str]
) -> str:
    """Signature of the trailer section (64 lower-case hex).

    Args:
        signing_key, timestamp, scope: as for :func:`chunk_signature`.
        previous_signature: the final (zero-length) chunk's signature.
        trailers: lower-case name -> value, without ``x-amz-trailer-signature``.
            They are signed as ``"name:value\\n"`` lines sorted by name.

    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html
    """
    canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            timestamp,
            scope,
            previous_signature,
            hashlib.sha256(_wire_bytes(canonical)).hexdigest(),
        ]
    )
    return hmac.new(signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()


def _wire_bytes(text: str) -> bytes:
    # Trailer values are decoded as latin-1 by the decoder, so latin-1 gives
    # back the bytes the client signed; wider text was built by a caller.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _malformed(reason: str) -> S3AuthError:
    return S3AuthError("InvalidArgument", f"Malformed aws-chunked body: {reason}")


def _malformed_trailer(reason: str) -> S3AuthError:
    return S3AuthError(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform "
        f"to our published schema. ({reason})",
    )


def _incomplete(reason: str) -> S3AuthError:
    return S3AuthError(
        "IncompleteBody",
        f"You did not provide the number of bytes specified by the Content-Length HTTP header. ({reason})",
    )


def _bad_signature(what: str) -> S3AuthError:
    return S3AuthError(
        "SignatureDoesNotMatch",
        f"The {what} signature we calculated does not match the signature you provided.",
    )


class AwsChunkedDecoder:
    """Push decoder for one aws-chunked body.

    Args:
        mode: the request's ``x-amz-content-sha256``, one of
            :data:`STREAMING_MODES`.
        signing_key: 32-byte signing key (signed modes only).
        timestamp: ``"YYYYMMDDTHHMMSSZ"`` of the request (signed modes only).
        scope: credential scope (signed modes only).
        seed_signature: the request's verified signature (signed modes only).
        decoded_content_length: ``x-amz-decoded-content-length`` if the client
            sent it; the decoded total must equal it.

    Attributes:
        trailers: trailer headers, lower-case name -> stripped value
            (``x-amz-trailer-signature`` excluded); complete once
            :meth:`close` returned.
        decoded_length: payload bytes returned so far.

    Raises:
        ValueError: unknown ``mode`` or missing signing parameters (a
            programming error, not a client error).
    """

    def __init__(
        self,
        mode: str,
        *,
        signing_key: bytes | None = None,
        timestamp: str = "",
        scope: str = "",
        seed_signature: str = "",
        decoded_content_length: int | None = None,
    ) -> None:
        if mode not in STREAMING_MODES:
            raise ValueError(f"not an aws-chunked payload mode: {mode!r}")
        self._signed = mode != STREAMING_UNSIGNED_TRAILER
        self._with_trailer = mode != STREAMING_PAYLOAD
        if self._signed and not (signing_key and timestamp and scope and seed_signature):
            raise ValueError(f"{mode} needs signing_key, timestamp, scope and seed_signature")
        self._key = signing_key or b""
        self._timestamp = timestamp
        self._scope = scope
        self._previous = seed_signature
        self._expected_length = decoded_content_length

        self.trailers: dict[str, str] = {}
        self.decoded_length = 0

        self._state = _HEADER
        self._line = bytearray()  # partial header/trailer line across feeds
        self._remaining = 0  # data bytes left in the current chunk
        self._crlf_seen = 0  # bytes of the CRLF after data seen so far
        self._last = False  # current chunk is the zero-length one
        self._sha = None  # SHA-256 of the current chunk (signed modes)
        self._claimed = ""  # signature claimed for the current chunk
        self._trailer_signature: str | None = None
        self._trailer_bytes = 0
        self._blank_before_trailers = False
        self._error: S3AuthError | None = None

    @classmethod
    def from_auth(cls, auth: AuthResult, decoded_content_length: int | None = None) -> AwsChunkedDecoder:
        """A decoder for a request verified by ``appliance.s3.sigv4.verify_request``.

        Args:
            auth: the verification result; ``auth.payload_hash`` must be one of
                :data:`STREAMING_MODES`.
            decoded_content_length: parsed ``x-amz-decoded-content-length``.
        """
        return cls(
            auth.payload_hash,
            signing_key=auth.signing_key,
            timestamp=auth.timestamp,
            scope=auth.scope,
            seed_signature=auth.signature,
            decoded_content_length=decoded_content_length,
        )

    @property
    def finished(self) -> bool:
        """True once the end of the body was recognised.  A trailer-mode body
        that ends without trailers (``0\\r\\n\\r\\n``) is only known complete at
        :meth:`close`."""
        return self._state is _DONE

    # -- public API ---------------------------------------------------------

    def feed(self, data: bytes) -> list[memoryview]:
        """Consume the next bytes of the body.

        Args:
            data: any number of body bytes (an empty ``bytes`` is fine).  Pass
                ``bytes``: other buffer types are copied once, because the
                returned views must not change under the caller.

        Returns:
            The payload bytes found, as ``memoryview`` slices of ``data`` (zero
            copy), in order; possibly empty.  They are provisional until
            :meth:`close` succeeds (see the module docstring).

        Raises:
            S3AuthError: see the module docstring.  After an error the decoder
                keeps raising it.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data if isinstance(data, bytes) else bytes(data))
        except S3AuthError as error:
            self._error = error
            raise

    def close(self) -> None:
        """Declare the end of the body and check that the stream was complete.

        Raises:
            S3AuthError: ``IncompleteBody`` if the body stopped before the final
                chunk (and trailers) or the decoded length differs from
                ``x-amz-decoded-content-length``; ``MalformedTrailerError`` /
                ``SignatureDoesNotMatch`` for a trailer section that ends here.
        """
        if self._error is not None:
            raise self._error
        try:
            self._close()
        except S3AuthError as error:
            self._error = error
            raise

    # -- state machine --------------------------------------------------------

    def _feed(self, buf: bytes) -> list[memoryview]:
        out: list[memoryview] = []
        view = memoryview(buf)
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state is _DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                if self._sha is not None:
                    self._sha.update(piece)
                out.append(piece)
                pos += take
                self._remaining -= take
                self.decoded_length += take
                if self._expected_length is not None and self.decoded_length > self._expected_length:
                    raise _incomplete("body longer than x-amz-decoded-content-length")
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state is _DATA_END:
                # The two bytes may arrive in separate feeds.
                if buf[pos] != b"\r\n"[self._crlf_seen]:
                    raise _malformed("chunk data not followed by CRLF")
                pos += 1
                self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._crlf_seen = 0
                    self._end_of_chunk()
            elif state is _DONE:
                raise _malformed("data after the final chunk")
            else:  # _HEADER or _TRAILER: line oriented
                error = _malformed_trailer if state is _TRAILER else _malformed
                # Bounded search: a line longer than MAX_LINE is refused
                # without scanning or buffering the rest of the input.
                limit = min(end, pos + MAX_LINE + 1 - len(self._line))
                newline = buf.find(b"\n", pos, limit)
                stop = limit if newline < 0 else newline + 1
                self._line += view[pos:stop]
                pos = stop
                if newline < 0:
                    if len(self._line) > MAX_LINE:
                        raise error("line too long")
                    continue
                if not self._line.endswith(b"\r\n"):
                    raise error("line not ended by CRLF")
                line = bytes(self._line[:-2])
                self._line.clear()
                if state is _HEADER:
                    self._chunk_header(line)
                else:
                    self._trailer_line(line)
        return out

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_text):
            raise _malformed(f"bad chunk size {size_text[:32]!r}")
        size = int(size_text, 16)
        if self._signed:
            match = _SIGNATURE_EXT.fullmatch(extension)
            if match is None:
                raise _malformed("chunk-signature missing or malformed")
            self._claimed = match.group(1).decode("ascii")
        # In STREAMING-UNSIGNED-PAYLOAD-TRAILER chunk extensions carry nothing
        # we need; they are ignored as HTTP/1.1 chunked encoding does.
        if size:
            self._remaining = size
            self._sha = hashlib.sha256() if self._signed else None
            self._state = _DATA
            return
        # The zero-length chunk ends the payload.
        self._last = True
        if self._signed:
            self._check_chunk_signature(EMPTY_SHA256)
        if self._with_trailer:
            self._state = _TRAILER
        else:
            self._state = _DATA_END  # its (empty) data is still followed by CRLF

    def _end_of_chunk(self) -> None:
        if self._last:
            self._finish()
            return
        if self._sha is not None:
            self._check_chunk_signature(self._sha.hexdigest())
            self._sha = None
        self._state = _HEADER

    def _check_chunk_signature(self, chunk_sha256_hex: str) -> None:
        expected = chunk_signature(self._key, self._timestamp, self._scope, self._previous, chunk_sha256_hex)
        if not hmac.compare_digest(expected, self._claimed):
            raise _bad_signature("chunk")
        self._previous = expected

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            if not self.trailers and self._trailer_signature is None and not self._blank_before_trailers:
                # Some SDKs send "0;chunk-signature=...\r\n\r\n" *then* the
                # trailers (the empty final chunk's CRLF); others put the
                # trailers right after the zero chunk.  Accept both: an empty
                # line before any trailer is that CRLF, or the end if nothing
                # follows (see _close).
                self._blank_before_trailers = True
                return
            self._finish_trailers()
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER_BYTES:
            raise _malformed_trailer("trailer section too large")
        name_bytes, colon, value_bytes = line.partition(b":")
        name = name_bytes.strip().lower().decode("latin-1")
        value = value_bytes.strip().decode("latin-1")
        if not colon or not name:
            raise _malformed_trailer("trailer line without a name")
        if name == _TRAILER_SIGNATURE:
            if not self._signed:
                raise _malformed_trailer("x-amz-trailer-signature in an unsigned stream")
            if self._trailer_signature is not None:
                raise _malformed_trailer("repeated x-amz-trailer-signature")
            self._trailer_signature = value
            return
        if self._trailer_signature is not None:
            raise _malformed_trailer("trailer after x-amz-trailer-signature")
        if name in self.trailers:
            raise _malformed_trailer(f"repeated trailer {name}")
        self.trailers[name] = value

    def _finish_trailers(self) -> None:
        if self._signed:
            if self._trailer_signature is None:
                raise _malformed_trailer("x-amz-trailer-signature missing")
            expected = trailer_signature(
                self._key, self._timestamp, self._scope, self._previous, self.trailers
            )
            claimed = self._trailer_signature.encode("latin-1")
            if not hmac.compare_digest(expected.encode("ascii"), claimed):
                raise _bad_signature("trailer")
        self._finish()

    def _finish(self) -> None:
        if self._expected_length is not None and self.decoded_length != self._expected_length:
            raise _incomplete(
                f"decoded {self.decoded_length} bytes, "
                f"x-amz-decoded-content-length is {self._expected_length}"
            )
        self._state = _DONE

    def _close(self) -> None:
        state = self._state
        if state is _DONE:
            return
        if state is _DATA_END and self._last and self._crlf_seen == 0:
            # Lenient: the final chunk arrived and was verified, only its
            # closing CRLF is missing.
            self._finish()
            return
        if state is _TRAILER and not self._line:
            if self._blank_before_trailers and not self.trailers and self._trailer_signature is None:
                # "0\r\n\r\n": no trailers at all.
                self._finish_trailers()
                return
            if self.trailers or self._trailer_signature is not None:
                # Lenient: every trailer line is complete, only the closing
                # empty line is missing.
                self._finish_trailers()
                return
        raise _incomplete("the request body terminated unexpectedly")
