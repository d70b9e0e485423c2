"""ListObjects v1/v2 and ListObjectVersions: prefix, delimiter, markers, tokens, max-keys,
encoding-type; checked against a brute-force model, on the wire and on the paging engine."""

from __future__ import annotations

import itertools
import random
import urllib.parse

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.namespace import ObjectRecord
from appliance.s3.listing import list_page, start_after

KEYS = sorted({"a", "a/", "a/b", "a/b/c", "a/b/d", "a/c", "a//x", "b", "b/1", "b/2/3", "c+d",
               "c d", "c%d", "dir/", "dir/sub/", "dir/sub/f", "e/é", "z", "zz/top"})


def model(keys, prefix="", delimiter="", after=""):
    """All entries (key or common prefix) AWS would list, in order, after ``after``."""
    out = []
    for k in sorted(keys, key=lambda s: s.encode()):
        if not k.startswith(prefix):
            continue
        i = k.find(delimiter, len(prefix)) if delimiter else -1
        e = ("P", k[:i + len(delimiter)]) if i >= 0 else ("K", k)
        if e[1].encode() <= after.encode() if after else False:
            continue
        if out and out[-1] == e:
            continue
        out.append(e)
    return out


@pytest.fixture(scope="module")
def listed_bucket(s3):
    c = s3.client()
    name = "list-" + random.randbytes(6).hex()
    c.create_bucket(Bucket=name)
    for k in KEYS:
        c.put_object(Bucket=name, Key=k, Body=k.encode())
    yield name
    from s3kit import empty_bucket
    empty_bucket(c, name)


def v2_all(c, bucket, **kw):
    entries, pages, token = [], 0, None
    while True:
        args = dict(kw)
        if token:
            args["ContinuationToken"] = token
        r = c.list_objects_v2(Bucket=bucket, **args)
        pages += 1
        got = [("K", o["Key"]) for o in r.get("Contents", [])] + \
              [("P", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        assert r["KeyCount"] == len(got)
        entries += sorted(got, key=lambda e: e[1].encode())
        if not r["IsTruncated"]:
            assert "NextContinuationToken" not in r
            return entries, pages
        token = r["NextContinuationToken"]


def v1_all(c, bucket, **kw):
    entries, marker = [], None
    while True:
        args = dict(kw)
        if marker is not None:
            args["Marker"] = marker
        r = c.list_objects(Bucket=bucket, **args)
        got = [("K", o["Key"]) for o in r.get("Contents", [])] + \
              [("P", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        got.sort(key=lambda e: e[1].encode())
        entries += got
        if not r["IsTruncated"]:
            return entries
        if kw.get("Delimiter"):
            assert r["NextMarker"] == got[-1][1]
            marker = r["NextMarker"]
        else:
            assert "NextMarker" not in r
            marker = got[-1][1]


@pytest.mark.parametrize("prefix,delimiter", [("", ""), ("", "/"), ("a", "/"), ("a/", "/"),
                                              ("a/b", ""), ("dir/", "/"), ("", "b"),
                                              ("c", " "), ("zz", "/"), ("nothing", "/")])
@pytest.mark.parametrize("max_keys", [1, 2, 3, 1000])
def test_v1_v2_match_model(s3c, listed_bucket, prefix, delimiter, max_keys):
    want = model(KEYS, prefix, delimiter)
    kw = {"Prefix": prefix, "MaxKeys": max_keys}
    if delimiter:
        kw["Delimiter"] = delimiter
    entries, pages = v2_all(s3c, listed_bucket, **kw)
    assert entries == want
    assert pages == max(1, -(-len(want) // max_keys))
    assert v1_all(s3c, listed_bucket, **kw) == want


def test_start_after_and_marker(s3c, listed_bucket):
    for after in ["a/b", "a/", "b/1", "c", "zzz", "a/b/c/d"]:
        for delim in ("", "/"):
            kw = {"Delimiter": delim} if delim else {}
            want = [e for e in model(KEYS, "", delim) if e[1].encode() > after.encode()]
            if delim:  # entries whose common prefix sorts before the marker are gone too
                want = model(KEYS, "", delim, after)
            got, _ = v2_all(s3c, listed_bucket, StartAfter=after, **kw)
            assert got == want, (after, delim)
            assert v1_all(s3c, listed_bucket, Marker=after, **kw) == want


def test_max_keys_zero(s3c, listed_bucket):
    r = s3c.list_objects_v2(Bucket=listed_bucket, MaxKeys=0)
    assert r["KeyCount"] == 0 and not r["IsTruncated"] and "Contents" not in r
    r = s3c.list_objects(Bucket=listed_bucket, MaxKeys=0)
    assert not r["IsTruncated"] and "Contents" not in r


def test_listing_fields(s3c, listed_bucket):
    r = s3c.list_objects_v2(Bucket=listed_bucket, Prefix="a/b/", FetchOwner=True)
    o = r["Contents"][0]
    assert o["Key"] == "a/b/c" and o["Size"] == 5 and o["ETag"].startswith('"')
    assert o["Owner"]["ID"] == "root" and o["StorageClass"] == "STANDARD"
    assert o["LastModified"].tzinfo is not None
    assert "Owner" not in s3c.list_objects_v2(Bucket=listed_bucket, Prefix="a/b/")["Contents"][0]
    assert "Owner" in s3c.list_objects(Bucket=listed_bucket, Prefix="a/b/")["Contents"][0]


def test_encoding_type_url(raw, listed_bucket):
    r = raw.request("GET", f"/{listed_bucket}",
                    query="list-type=2&encoding-type=url&prefix=c&delimiter=%20")
    assert r.status == 200
    body = r.body.decode()
    assert "<Key>c%2Bd</Key>" in body and "<Key>c%25d</Key>" in body
    assert "<Prefix>c+</Prefix>" in body  # the common prefix "c " and the delimiter " "
    assert "<Delimiter>+</Delimiter>" in body and "<EncodingType>url</EncodingType>" in body
    r = raw.request("GET", f"/{listed_bucket}", query="encoding-type=url&prefix=e%2F")
    assert "<Key>e/%C3%A9</Key>" in r.body.decode()


def test_boto3_decodes_url_encoding(s3c, listed_bucket):
    # boto3 asks for encoding-type=url on its own and decodes every field.
    entries, _ = v2_all(s3c, listed_bucket, Prefix="c", Delimiter=" ")
    assert entries == model(KEYS, "c", " ")


def test_invalid_parameters(s3c, raw, listed_bucket):
    for q, name in (("list-type=2&continuation-token=%21%21notours", "continuation-token"),
                    ("max-keys=-1", "max-keys"), ("max-keys=abc", "max-keys"),
                    ("encoding-type=zip", "encoding-type")):
        r = raw.request("GET", f"/{listed_bucket}", query=q)
        assert r.status == 400 and r.error_code() == "InvalidArgument", q
        assert f"<ArgumentName>{name}</ArgumentName>".encode() in r.body


def test_list_versions(s3c, listed_bucket):
    r = s3c.list_object_versions(Bucket=listed_bucket, Prefix="a/", Delimiter="/")
    assert [v["Key"] for v in r["Versions"]] == ["a/", "a/b", "a/c"]
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in r["Versions"])
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a//", "a/b/"]
    keys, marker = [], None
    while True:
        kw = {"KeyMarker": marker} if marker else {}
        r = s3c.list_object_versions(Bucket=listed_bucket, MaxKeys=4, **kw)
        keys += [v["Key"] for v in r.get("Versions", [])]
        if not r["IsTruncated"]:
            break
        marker = r["NextKeyMarker"]
    assert keys == KEYS


def test_list_missing_bucket(s3c):
    with pytest.raises(s3c.exceptions.NoSuchBucket):
        s3c.list_objects_v2(Bucket="no-such-bucket-for-listing")


# -- the paging engine against a fake namespace: scan counts and exhaustive checks ---------


class FakeNamespace:
    def __init__(self, keys):
        self.keys = sorted(k.encode() for k in keys)
        self.scans = 0

    async def list_objects(self, bucket, prefix="", *, start=b"", limit=1000):
        self.scans += 1
        lo = max(prefix.encode(), start)
        out = [k for k in self.keys if k >= lo and k.startswith(prefix.encode())][:limit]
        return [ObjectRecord(k.decode(), 0, "", 0.0, []) for k in out]


def page_all(ns, prefix, delimiter, max_keys, after=""):
    async def run():
        entries = []
        start = start_after(after, prefix, delimiter) if after else b""
        while True:
            p = await list_page(ns, "b", prefix=prefix, delimiter=delimiter, start=start,
                                max_keys=max_keys)
            entries += [("P", e) if isinstance(e, str) else ("K", e.key) for e in p.entries]
            assert len(p.entries) <= max_keys
            if not p.truncated:
                return entries
            assert len(p.entries) == max_keys
            start = p.next_start
    return trio.run(run)


def test_common_prefix_skipped_in_one_scan():
    keys = [f"big/{i:06d}" for i in range(50_000)] + ["a", "big0", "c/1", "c/2", "d"]
    ns = FakeNamespace(keys)
    entries = page_all(ns, "", "/", 1000)
    assert entries == [("K", "a"), ("P", "big/"), ("K", "big0"), ("P", "c/"), ("K", "d")]
    assert ns.scans <= 4, ns.scans  # not 50 scans of 1000 keys


alphabet = st.sampled_from(["a", "b", "/", "-", "é", "~"])


@settings(max_examples=300, deadline=None)
@given(keys=st.sets(st.text(alphabet, min_size=1, max_size=5), max_size=25),
       prefix=st.text(alphabet, max_size=2), delimiter=st.sampled_from(["", "/", "a", "-/"]),
       max_keys=st.integers(1, 5), after=st.text(alphabet, max_size=3))
def test_paging_engine_matches_model(keys, prefix, delimiter, max_keys, after):
    ns = FakeNamespace(keys)
    assert page_all(ns, prefix, delimiter, max_keys, after) == \
        model(keys, prefix, delimiter, after)


def test_model_sanity():
    assert model(["a/b", "a/c", "b"], "", "/") == [("P", "a/"), ("K", "b")]
    assert list(itertools.islice(model(KEYS, "a/", "/"), 2)) == [("K", "a/"), ("P", "a//")]
    assert urllib.parse.quote_plus("c d", safe="/") == "c+d"
