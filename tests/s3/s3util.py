"""Test helpers: aws-chunked encoders (independent of the gateway's decoder) and SigV4 bits."""

from __future__ import annotations

import hashlib
import hmac
import re

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def signing_key(secret: str, date: str, region: str = "us-east-1") -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def seed_of(headers: dict[str, str]) -> tuple[str, str, str]:
    """(seed signature, timestamp, scope) of a request signed by RawClient.sign."""
    authz = headers["Authorization"]
    sig = re.search(r"Signature=([0-9a-f]{64})", authz).group(1)
    scope = re.search(r"Credential=[^/]+/([^,]+),", authz).group(1)
    return sig, headers["X-Amz-Date"], scope


def aws_chunked_signed(data: bytes, chunk: int, key: bytes, timestamp: str, scope: str,
                       seed: str, trailers: dict[str, str] | None = None) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) encoding of ``data``."""
    out = bytearray()
    prev = seed
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for p in pieces:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, prev, EMPTY_SHA256,
                         hashlib.sha256(p).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += b"%x;chunk-signature=%s\r\n" % (len(p), prev.encode())
        if p or trailers is None:
            out += p + b"\r\n"
    if trailers is not None:
        canon = "".join(f"{k}:{v}\n" for k, v in sorted(trailers.items()))
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", timestamp, scope, prev,
                         hashlib.sha256(canon.encode()).hexdigest()])
        tsig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        for k, v in trailers.items():
            out += f"{k}:{v}\r\n".encode()
        out += f"x-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    return bytes(out)


def aws_chunked_unsigned(data: bytes, chunk: int, trailers: dict[str, str]) -> bytes:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER encoding of ``data`` (what SDKs send over HTTPS)."""
    out = bytearray()
    for i in range(0, len(data), chunk):
        p = data[i:i + chunk]
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers.items():
        out += f"{k}:{v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)
