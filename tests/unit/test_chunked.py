"""aws-chunked decoding: AWS's published signed-chunk examples, bodies made by
botocore's own aws-chunked encoder, tampering, and random split points."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from datetime import datetime, timezone

import crc32c
import pytest
from botocapture import lower_headers, put_request
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.s3.checksums import new_hasher, select_checksum
from appliance.s3.chunked import (
    MAX_LINE,
    AwsChunkedDecoder,
    chunk_signature,
    trailer_signature,
)
from appliance.s3.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    S3AuthError,
    SignedRequest,
    derive_signing_key,
    verify_request,
)

# ---------------------------------------------------------------------------
# AWS's published example: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html
# (and sigv4-streaming-trailers.html for the trailer variant)

DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIMESTAMP = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_KEY = derive_signing_key(DOC_SECRET, "20130524", "us-east-1")
DOC_DATA = b"a" * 66560

DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)

DOC_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
DOC_TRAILER_CHUNKS = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
)
DOC_TRAILERS = (
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n"
)
# SDKs differ on whether an empty line separates the zero chunk from the
# trailers; both forms are in use.
DOC_TRAILER_BODIES = [DOC_TRAILER_CHUNKS + DOC_TRAILERS, DOC_TRAILER_CHUNKS + b"\r\n" + DOC_TRAILERS]


def doc_decoder(seed=DOC_SEED, mode=STREAMING_PAYLOAD, length=66560) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(
        mode,
        signing_key=DOC_KEY,
        timestamp=DOC_TIMESTAMP,
        scope=DOC_SCOPE,
        seed_signature=seed,
        decoded_content_length=length,
    )


def doc_trailer_decoder(length=66560) -> AwsChunkedDecoder:
    return doc_decoder(DOC_TRAILER_SEED, STREAMING_PAYLOAD_TRAILER, length)


def decode(decoder: AwsChunkedDecoder, *pieces: bytes, close=True) -> bytes:
    out = bytearray()
    for piece in pieces:
        for view in decoder.feed(piece):
            out += view
    if close:
        decoder.close()
    return bytes(out)


def split_at(data: bytes, cuts) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def expect(code: str, status: int, fn, *args):
    with pytest.raises(S3AuthError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    assert info.value.status == status
    return info.value


def test_documented_signed_chunks():
    decoder = doc_decoder()
    assert decode(decoder, DOC_BODY) == DOC_DATA
    assert decoder.finished and decoder.trailers == {} and decoder.decoded_length == 66560


def test_documented_request_to_decoder_end_to_end():
    headers = (
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", DOC_TIMESTAMP),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", STREAMING_PAYLOAD),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", str(len(DOC_BODY))),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class,Signature=" + DOC_SEED,
        ),
    )
    assert len(DOC_BODY) == 66824  # the documented Content-Length
    auth = verify_request(
        SignedRequest("PUT", b"/examplebucket/chunkObject.txt", b"", headers),
        {"AKIAIOSFODNN7EXAMPLE": DOC_SECRET},
        datetime(2013, 5, 24, 0, 1, tzinfo=timezone.utc),
    )
    assert auth.signing_key == DOC_KEY
    decoder = AwsChunkedDecoder.from_auth(auth, decoded_content_length=66560)
    assert decode(decoder, DOC_BODY) == DOC_DATA


@pytest.mark.parametrize("body", DOC_TRAILER_BODIES)
def test_documented_signed_trailer(body):
    decoder = doc_trailer_decoder()
    assert decode(decoder, body) == DOC_DATA
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    assert base64.b64encode(crc32c.crc32c(DOC_DATA).to_bytes(4, "big")) == b"sOO8/Q=="


def test_documented_signed_trailer_without_final_empty_line():
    body = DOC_TRAILER_CHUNKS + DOC_TRAILERS[:-2]
    decoder = doc_trailer_decoder()
    assert decode(decoder, body) == DOC_DATA
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_signature_helpers_reproduce_documented_chain():
    previous = DOC_SEED
    expected = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]
    for data, signature in zip([b"a" * 65536, b"a" * 1024, b""], expected):
        previous = chunk_signature(DOC_KEY, DOC_TIMESTAMP, DOC_SCOPE, previous, hashlib.sha256(data).hexdigest())
        assert previous == signature
    final = "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"
    assert (
        trailer_signature(DOC_KEY, DOC_TIMESTAMP, DOC_SCOPE, final, {"x-amz-checksum-crc32c": "sOO8/Q=="})
        == "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
    )


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=70000), max_size=12), which=st.sampled_from([0, 1, 2]))
def test_documented_bodies_random_splits(cuts, which):
    if which == 0:
        decoder, body = doc_decoder(), DOC_BODY
    else:
        decoder, body = doc_trailer_decoder(), DOC_TRAILER_BODIES[which - 1]
    # Cut points near the framing matter most: bias half of them there.
    frame_points = [0, 1, 85, 86, 87, 88, 65622, 65623, 65624, 65625, len(body) - 3, len(body) - 1]
    assert decode(decoder, *split_at(body, cuts + frame_points[: len(cuts)])) == DOC_DATA
    assert decoder.finished


def test_byte_by_byte_feeding():
    decoder = doc_trailer_decoder()
    body = DOC_TRAILER_BODIES[1]
    head, data_end = 200, len(DOC_TRAILER_CHUNKS) - 300
    # Feed the framing-heavy ends one byte at a time, the middle in one go.
    pieces = [body[i : i + 1] for i in range(head)] + [body[head:data_end]]
    pieces += [body[i : i + 1] for i in range(data_end, len(body))]
    assert decode(decoder, *pieces) == DOC_DATA
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


# ---------------------------------------------------------------------------
# tampering with the signed examples


def flip(body: bytes, index: int, new: bytes) -> bytes:
    return body[:index] + new + body[index + 1 :]


def test_tampered_chunk_data():
    body = flip(DOC_BODY, 5000, b"b")
    expect("SignatureDoesNotMatch", 403, decode, doc_decoder(), body)


def test_tampered_last_data_chunk_caught_on_the_feed_completing_it():
    decoder = doc_decoder()
    body = flip(DOC_BODY, 66000, b"b")
    end_of_second = DOC_BODY.index(b"\r\n0;") + 2
    decode(decoder, body[:end_of_second - 3], close=False)  # chunk 2 still open
    expect("SignatureDoesNotMatch", 403, decoder.feed, body[end_of_second - 3 : end_of_second])
    # the decoder stays failed
    expect("SignatureDoesNotMatch", 403, decoder.feed, b"")
    expect("SignatureDoesNotMatch", 403, decoder.close)


def test_tampered_chunk_signature_and_reordered_chunks():
    body = DOC_BODY.replace(b"ad80c730", b"ad80c731")
    expect("SignatureDoesNotMatch", 403, decode, doc_decoder(), body)
    expect("SignatureDoesNotMatch", 403, decode, doc_decoder("0" * 64), DOC_BODY)
    first_end = DOC_BODY.index(b"400;")
    second_end = DOC_BODY.index(b"0;chunk-signature=b6")
    swapped = DOC_BODY[first_end:second_end] + DOC_BODY[:first_end] + DOC_BODY[second_end:]
    expect("SignatureDoesNotMatch", 403, decode, doc_decoder(), swapped)


def test_dropped_final_chunk_is_incomplete():
    body = DOC_BODY[: DOC_BODY.index(b"0;chunk-signature=b6")]
    expect("IncompleteBody", 400, decode, doc_decoder(), body)


@pytest.mark.parametrize("cut", [1, 10, 90, 40000, 66700, len(DOC_BODY) - 90])
def test_truncated_body_is_incomplete(cut):
    expect("IncompleteBody", 400, decode, doc_decoder(), DOC_BODY[:cut])


def test_missing_final_crlf_is_tolerated():
    assert decode(doc_decoder(), DOC_BODY[:-2]) == DOC_DATA


def test_decoded_length_mismatch():
    expect("IncompleteBody", 400, decode, doc_decoder(length=66561), DOC_BODY)
    decoder = doc_decoder(length=1000)
    # Too long is refused as soon as the excess arrives, not at the end.
    expect("IncompleteBody", 400, decoder.feed, DOC_BODY[:2000])


def test_tampered_trailer_value_and_signature():
    body = DOC_TRAILER_BODIES[0].replace(b"sOO8/Q==", b"sOO8/A==")
    expect("SignatureDoesNotMatch", 403, decode, doc_trailer_decoder(), body)
    body = DOC_TRAILER_BODIES[0].replace(b"d81f82fc", b"d81f82fd")
    expect("SignatureDoesNotMatch", 403, decode, doc_trailer_decoder(), body)
    missing = DOC_TRAILER_CHUNKS + b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n"
    expect("MalformedTrailerError", 400, decode, doc_trailer_decoder(), missing)
    added = DOC_TRAILER_CHUNKS + b"x-amz-meta-x:1\r\n" + DOC_TRAILERS
    expect("SignatureDoesNotMatch", 403, decode, doc_trailer_decoder(), added)


@pytest.mark.parametrize(
    "body",
    [
        b"zz;chunk-signature=" + b"0" * 64 + b"\r\n",  # not hex
        b"0x10;chunk-signature=" + b"0" * 64 + b"\r\n",  # int() would take it
        b"10\r\n",  # no chunk signature in a signed stream
        b"10;chunk-signature=ABC\r\n",  # malformed signature
        b"10;chunk-signature=" + b"0" * 64 + b"\n",  # bare LF
        b"1" * (MAX_LINE + 10),  # endless header line
    ],
)
def test_malformed_signed_framing(body):
    expect("InvalidArgument", 400, decode, doc_decoder(), body)


def test_data_not_followed_by_crlf_and_data_after_end():
    body = DOC_BODY.replace(b"a\r\n400;", b"aX\n400;")
    expect("InvalidArgument", 400, decode, doc_decoder(length=None), body)
    expect("InvalidArgument", 400, decode, doc_decoder(), DOC_BODY + b"junk")


def test_constructor_rejects_bad_modes():
    with pytest.raises(ValueError):
        AwsChunkedDecoder("UNSIGNED-PAYLOAD")
    with pytest.raises(ValueError):
        AwsChunkedDecoder(STREAMING_PAYLOAD)  # no signing material


# ---------------------------------------------------------------------------
# bodies from botocore's encoder (STREAMING-UNSIGNED-PAYLOAD-TRAILER)


def boto_put(body: bytes, algorithm: str = "CRC32"):
    """Headers and wire body of a real boto3 PutObject over HTTPS (which makes
    botocore use aws-chunked with a trailing checksum)."""
    request = put_request("https://s3.test", Body=io.BytesIO(body), ChecksumAlgorithm=algorithm)
    return lower_headers(request), request.body.read()


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 17, 3 << 20])
def test_botocore_unsigned_trailer_bodies(algorithm, size):
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    headers, wire = boto_put(payload, algorithm)
    assert headers["x-amz-content-sha256"] == STREAMING_UNSIGNED_TRAILER
    assert headers["content-encoding"] == "aws-chunked"
    decoder = AwsChunkedDecoder(
        headers["x-amz-content-sha256"], decoded_content_length=int(headers["x-amz-decoded-content-length"])
    )
    assert decode(decoder, wire) == payload
    # the trailer is the one x-amz-trailer announced, and it checks out
    expected = select_checksum(headers.items())
    assert expected is not None and expected.trailer and expected.algorithm == algorithm
    hasher = new_hasher(algorithm)
    hasher.update(payload)
    hasher.verify(expected.from_trailers(decoder.trailers))


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk_size=st.integers(min_value=1, max_value=700),
    cuts=st.lists(st.integers(min_value=0, max_value=10000), max_size=20),
)
def test_botocore_wrapper_random_chunks_and_splits(payload, chunk_size, cuts):
    wire = AwsChunkedWrapper(
        io.BytesIO(payload), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size
    ).read()
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, decoded_content_length=len(payload))
    assert decode(decoder, *split_at(wire, cuts)) == payload
    crc = base64.b64encode((zlib.crc32(payload) & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    assert decoder.trailers == {"x-amz-checksum-crc32": crc}


def test_botocore_wrapper_without_checksum():
    # botocore's wrapper with no checksum ends with "0\r\n\r\n": no trailers.
    wire = AwsChunkedWrapper(io.BytesIO(b"abc" * 100), chunk_size=64).read()
    assert wire.endswith(b"0\r\n\r\n")
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER)
    assert decode(decoder, wire) == b"abc" * 100
    assert decoder.trailers == {}


def test_unsigned_stream_errors():
    wire = AwsChunkedWrapper(io.BytesIO(b"x" * 50), checksum_cls=Sha256Checksum, checksum_name="x-amz-checksum-sha256").read()
    expect("IncompleteBody", 400, decode, AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), wire[:-5])
    signed_trailer = wire[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    expect("MalformedTrailerError", 400, decode, AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), signed_trailer)
    no_colon = wire.replace(b"x-amz-checksum-sha256:", b"x-amz-checksum-sha256=")
    expect("MalformedTrailerError", 400, decode, AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), no_colon)
    repeated = wire[:-2] + wire[wire.index(b"x-amz-checksum") :]
    expect("MalformedTrailerError", 400, decode, AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), repeated)
    huge = wire[:-2] + b"".join(b"x-amz-meta-%d:%s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n"
    expect("MalformedTrailerError", 400, decode, AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), huge)
    # chunk extensions are ignored in unsigned streams
    assert decode(AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER), b"3;foo=bar\r\nabc\r\n0\r\n\r\n") == b"abc"


# ---------------------------------------------------------------------------
# signed streams with random chunking (test-only encoder, its signatures
# validated above against the documented chain)


def encode_signed(payload: bytes, sizes, seed: str, trailers: dict[str, str] | None) -> bytes:
    out = bytearray()
    previous, pos, i = seed, 0, 0
    while pos < len(payload):
        size = max(1, sizes[i % len(sizes)]) if sizes else len(payload)
        chunk = payload[pos : pos + size]
        pos, i = pos + len(chunk), i + 1
        previous = chunk_signature(DOC_KEY, DOC_TIMESTAMP, DOC_SCOPE, previous, hashlib.sha256(chunk).hexdigest())
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(chunk), previous.encode(), chunk)
    previous = chunk_signature(DOC_KEY, DOC_TIMESTAMP, DOC_SCOPE, previous, hashlib.sha256(b"").hexdigest())
    out += b"0;chunk-signature=%s\r\n" % previous.encode()
    if trailers is None:
        return bytes(out + b"\r\n")
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    signature = trailer_signature(DOC_KEY, DOC_TIMESTAMP, DOC_SCOPE, previous, trailers)
    return bytes(out + f"x-amz-trailer-signature:{signature}\r\n\r\n".encode())


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=5000),
    sizes=st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=15),
    with_trailer=st.booleans(),
)
def test_signed_random_chunks_and_splits(payload, sizes, cuts, with_trailer):
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if with_trailer else None
    mode = STREAMING_PAYLOAD_TRAILER if with_trailer else STREAMING_PAYLOAD
    wire = encode_signed(payload, sizes, DOC_SEED, trailers)
    decoder = doc_decoder(DOC_SEED, mode, len(payload))
    assert decode(decoder, *split_at(wire, cuts)) == payload
    assert decoder.trailers == (trailers or {})


def test_pieces_are_zero_copy_views():
    wire = AwsChunkedWrapper(io.BytesIO(b"q" * 300000), chunk_size=65536).read()
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER)
    pieces = decoder.feed(wire)
    decoder.close()
    assert all(isinstance(p, memoryview) and p.obj is wire for p in pieces)
    assert sum(len(p) for p in pieces) == 300000
    # a bytearray input is copied once so that views stay valid
    mutable = bytearray(wire)
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER)
    pieces = decoder.feed(mutable)
    mutable[:] = b"\0" * len(mutable)
    assert b"".join(pieces) == b"q" * 300000
