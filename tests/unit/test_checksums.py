"""Checksums: catalogue check values, agreement with botocore's (and awscrt's)
implementations, header parsing as real clients send it, multipart combining."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib

import pytest
from botocapture import lower_headers, put_request
import trio
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.s3.checksums import (
    ALGORITHMS,
    DIGEST_SIZES,
    MultiHasher,
    algorithm_for_header,
    combine_crc,
    composite_checksum,
    decode_checksum,
    decode_content_md5,
    full_object_crc,
    header_name,
    multipart_etag,
    new_hasher,
    select_checksum,
    update_in_thread,
    verify_digest,
)
from appliance.s3.sigv4 import S3AuthError

ALL = [*ALGORITHMS, "MD5"]
CRCS = ["CRC32", "CRC32C", "CRC64NVME"]


def digest_of(algorithm: str, data: bytes) -> bytes:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.digest()


def expect(code: str, fn, *args):
    with pytest.raises(S3AuthError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    assert info.value.status == 400
    return info.value


# ---------------------------------------------------------------------------
# algorithms


@pytest.mark.parametrize(
    "algorithm, check",
    [
        # "check" values of the CRC catalogue (reveng.sourceforge.io/crc-catalogue)
        ("CRC32", 0xCBF43926),
        ("CRC32C", 0xE3069283),
        ("CRC64NVME", 0xAE8B14860A799888),
    ],
)
def test_crc_check_values(algorithm, check):
    digest = digest_of(algorithm, b"123456789")
    assert digest == check.to_bytes(DIGEST_SIZES[algorithm], "big")


def test_crc64nvme_more_vectors():
    # CRC-64/NVME of 32 zero bytes and of nothing.
    assert digest_of("CRC64NVME", bytes(32)).hex() == "cf3473434d4ecf3b"
    assert digest_of("CRC64NVME", b"") == bytes(8)


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "MD5"])
def test_hashlib_algorithms(algorithm):
    data = os.urandom(5000)
    assert digest_of(algorithm, data) == hashlib.new(algorithm.lower(), data).digest()


@pytest.mark.parametrize(
    "algorithm, botocore_cls",
    [("CRC32", Crc32Checksum), ("SHA1", Sha1Checksum), ("SHA256", Sha256Checksum)],
)
def test_agrees_with_botocore(algorithm, botocore_cls):
    data = os.urandom(100_000)
    theirs = botocore_cls()
    theirs.update(data[:777])
    theirs.update(data[777:])
    hasher = new_hasher(algorithm)
    hasher.update(data)
    assert hasher.b64() == theirs.b64digest()


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_agrees_with_awscrt(algorithm):
    checksums = pytest.importorskip("awscrt.checksums")
    function = getattr(checksums, algorithm.lower(), None)
    if function is None:
        pytest.skip(f"this awscrt has no {algorithm.lower()}")
    data = os.urandom(100_000)
    value = function(data[:1000])
    value = function(data[1000:], value)
    assert digest_of(algorithm, data) == value.to_bytes(DIGEST_SIZES[algorithm], "big")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4000), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8))
def test_incremental_equals_one_shot(data, cuts):
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    multi = MultiHasher(ALL)
    for a, b in zip(bounds, bounds[1:]):
        multi.update(memoryview(data)[a:b])
    for algorithm in ALL:
        assert multi[algorithm].digest() == digest_of(algorithm, data)


def test_hasher_outputs():
    hasher = new_hasher("crc32")
    assert hasher.algorithm == "CRC32" and hasher.digest_size == 4
    hasher.update(b"hello")
    assert hasher.hexdigest() == "3610a686"
    assert hasher.b64() == base64.b64encode(bytes.fromhex("3610a686")).decode()
    with pytest.raises(ValueError):
        new_hasher("CRC16")


def test_multihasher_dedupes_and_digests():
    multi = MultiHasher(["MD5", "crc32", "CRC32"])
    multi.update_many([b"ab", bytearray(b"c"), memoryview(b"d")])
    assert set(multi.digests()) == {"MD5", "CRC32"}
    assert multi.digests()["MD5"] == hashlib.md5(b"abcd").digest()


def test_update_in_thread():
    pieces = [os.urandom(70_000) for _ in range(20)]
    whole = b"".join(pieces)
    multi = MultiHasher(["MD5", "CRC32C"])
    sha = new_hasher("SHA256")

    async def main():
        await update_in_thread(multi, pieces[:10])
        await update_in_thread(multi, pieces[10:], limiter=trio.CapacityLimiter(1))
        async with trio.open_nursery() as nursery:  # separate hashers may run concurrently
            nursery.start_soon(update_in_thread, [sha], pieces)

    trio.run(main)
    assert multi["MD5"].digest() == hashlib.md5(whole).digest()
    assert multi["CRC32C"].digest() == digest_of("CRC32C", whole)
    assert sha.digest() == hashlib.sha256(whole).digest()


# ---------------------------------------------------------------------------
# client-supplied values


def test_header_names():
    assert header_name("crc64nvme") == "x-amz-checksum-crc64nvme"
    assert header_name("MD5") == "content-md5"
    assert algorithm_for_header("X-Amz-Checksum-SHA256") == "SHA256"
    assert algorithm_for_header("x-amz-checksum-type") is None
    assert algorithm_for_header("x-amz-checksum-md5") is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_decode_and_verify(algorithm):
    data = b"payload"
    digest = digest_of(algorithm, data)
    text = base64.b64encode(digest).decode()
    assert decode_checksum(algorithm, text) == digest
    hasher = new_hasher(algorithm)
    hasher.update(data)
    hasher.verify(text)
    hasher.verify(digest)
    hasher.update(b"more")
    error = expect("BadDigest", hasher.verify, text)
    assert error.message == f"The {algorithm} you specified did not match the calculated checksum."


@pytest.mark.parametrize(
    "value",
    ["", "AAAA", "AAAAAAAAAAAAAAAA", "not base64!", "AAAAAA==AA", "AAA=A==="],
)
def test_decode_rejects_bad_values(value):
    error = expect("InvalidRequest", decode_checksum, "CRC32", value)
    assert error.message == "Value for x-amz-checksum-crc32 header is invalid."


def test_content_md5():
    digest = hashlib.md5(b"x").digest()
    assert decode_content_md5(base64.b64encode(digest).decode()) == digest
    expect("InvalidDigest", decode_content_md5, "bm90IG1kNQ==")
    error = expect("BadDigest", verify_digest, "MD5", digest, hashlib.md5(b"y").digest())
    assert error.message == "The Content-MD5 you specified did not match what we received."


def boto_put_headers(endpoint: str, **params) -> list[tuple[str, str]]:
    return list(lower_headers(put_request(endpoint, **params)).items())


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_select_checksum_from_real_client_headers(algorithm):
    body = b"some object data"
    # Over HTTP botocore puts the checksum in a header...
    headers = boto_put_headers("http://s3.test", Body=body, ChecksumAlgorithm=algorithm)
    expected = select_checksum(headers)
    assert expected is not None and not expected.trailer
    assert expected.algorithm == algorithm
    assert expected.value == digest_of(algorithm, body)
    assert expected.from_trailers({}) == expected.value
    # ...over HTTPS in an aws-chunked trailer.
    headers = boto_put_headers("https://s3.test", Body=io.BytesIO(body), ChecksumAlgorithm=algorithm)
    expected = select_checksum(headers)
    assert expected is not None and expected.trailer and expected.value is None
    assert expected.algorithm == algorithm
    error = expect("MalformedTrailerError", expected.from_trailers, {})
    assert header_name(algorithm) in error.message


def test_select_checksum_default_and_none():
    # botocore's default: CRC32 even without ChecksumAlgorithm
    headers = boto_put_headers("http://s3.test", Body=b"abc")
    assert select_checksum(headers).algorithm == "CRC32"
    assert select_checksum([("content-type", "text/plain")]) is None


def test_select_checksum_errors():
    crc = base64.b64encode(digest_of("CRC32", b"x")).decode()
    sha = base64.b64encode(digest_of("SHA1", b"x")).decode()
    both = [("x-amz-checksum-crc32", crc), ("x-amz-checksum-sha1", sha)]
    expect("InvalidRequest", select_checksum, both)
    header_and_trailer = [("x-amz-checksum-crc32", crc), ("x-amz-trailer", "x-amz-checksum-sha1")]
    expect("InvalidRequest", select_checksum, header_and_trailer)
    expect("InvalidRequest", select_checksum, [("x-amz-trailer", "x-amz-checksum-md5")])
    expect("InvalidRequest", select_checksum, [("x-amz-checksum-crc32", "bad")])
    expect("InvalidRequest", select_checksum, [("x-amz-sdk-checksum-algorithm", "CRC32")])
    mismatch = [("x-amz-checksum-crc32", crc), ("x-amz-sdk-checksum-algorithm", "SHA1")]
    expect("InvalidRequest", select_checksum, mismatch)
    unknown = [("x-amz-checksum-crc32", crc), ("x-amz-sdk-checksum-algorithm", "XXH3")]
    expect("InvalidRequest", select_checksum, unknown)
    ok = [("x-amz-checksum-crc32", crc), ("x-amz-sdk-checksum-algorithm", "crc32")]
    assert select_checksum(ok).algorithm == "CRC32"


# ---------------------------------------------------------------------------
# multipart


def test_composite_checksum_is_checksum_of_checksums():
    parts = [os.urandom(1000), os.urandom(2000), b""]
    for algorithm in ALGORITHMS:
        digests = [digest_of(algorithm, p) for p in parts]
        value = composite_checksum(algorithm, digests)
        b64, suffix = value.rsplit("-", 1)
        assert suffix == "3"
        assert base64.b64decode(b64) == digest_of(algorithm, b"".join(digests))


def test_composite_crc32_known_value():
    # Spelled out with zlib directly: CRC32 over the two big-endian part CRCs.
    digests = [(zlib.crc32(b"part1")).to_bytes(4, "big"), (zlib.crc32(b"part2")).to_bytes(4, "big")]
    expected = base64.b64encode(zlib.crc32(digests[0] + digests[1]).to_bytes(4, "big")).decode() + "-2"
    assert composite_checksum("CRC32", digests) == expected


def test_multipart_etag():
    parts = [b"a" * 10, b"b" * 20]
    md5s = [hashlib.md5(p).digest() for p in parts]
    assert multipart_etag(md5s) == hashlib.md5(b"".join(md5s)).hexdigest() + "-2"


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(CRCS),
    parts=st.lists(st.binary(max_size=3000), max_size=6),
)
def test_full_object_crc_equals_crc_of_whole(algorithm, parts):
    combined = full_object_crc(algorithm, [(digest_of(algorithm, p), len(p)) for p in parts])
    assert combined == digest_of(algorithm, b"".join(parts))


@pytest.mark.parametrize("algorithm", CRCS)
def test_combine_large_lengths(algorithm):
    # One combine over 5 MiB must equal five combines over 1 MiB each (and the
    # direct CRC), which exercises several bits of the length.
    a = digest_of(algorithm, b"head")
    zeros_1m = digest_of(algorithm, bytes(1 << 20))
    step = a
    for _ in range(5):
        step = combine_crc(algorithm, step, zeros_1m, 1 << 20)
    assert combine_crc(algorithm, a, digest_of(algorithm, bytes(5 << 20)), 5 << 20) == step
    assert step == digest_of(algorithm, b"head" + bytes(5 << 20))


def test_full_object_rejects_sha():
    expect("InvalidRequest", full_object_crc, "SHA256", [])
    expect("InvalidRequest", combine_crc, "SHA1", b"", b"", 1)
