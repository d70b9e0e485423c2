"""Service and bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket,
GetBucketLocation, ownership, bucket sub-resources, /health and /metrics."""

from __future__ import annotations

import urllib.request
import uuid

import botocore.exceptions
import pytest


def code_of(exc: botocore.exceptions.ClientError) -> str:
    return exc.response["Error"]["Code"]


def status_of(exc: botocore.exceptions.ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def new_name() -> str:
    return "b-" + uuid.uuid4().hex[:16]


def test_health_and_metrics_need_no_auth(s3, s3c, bucket):
    with urllib.request.urlopen(s3.endpoint + "/health") as r:
        assert r.status == 200 and r.read() == b"ok"
    s3c.list_objects_v2(Bucket=bucket)
    with urllib.request.urlopen(s3.endpoint + "/metrics") as r:
        text = r.read().decode()
    assert "appliance_s3_requests_total" in text
    assert 'op="ListObjectsV2"' in text
    assert "appliance_s3_request_seconds_bucket" in text
    assert "appliance_shard_ops_total" in text  # store metrics share the registry


def test_anonymous_request_is_denied(s3):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(s3.endpoint + "/")
    assert e.value.code == 403
    assert b"<Code>AccessDenied</Code>" in e.value.read()


def test_create_list_head_delete(s3c):
    name = new_name()
    s3c.create_bucket(Bucket=name)
    names = [b["Name"] for b in s3c.list_buckets()["Buckets"]]
    assert name in names
    assert s3c.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"][
        "x-amz-bucket-region"] == "us-east-1"
    assert s3c.get_bucket_location(Bucket=name).get("LocationConstraint") in (None, "")
    s3c.delete_bucket(Bucket=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.head_bucket(Bucket=name)
    assert status_of(e.value) == 404
    with pytest.raises(s3c.exceptions.NoSuchBucket):
        s3c.delete_bucket(Bucket=name)
    with pytest.raises(s3c.exceptions.NoSuchBucket):
        s3c.list_objects_v2(Bucket=name)


def test_create_with_location_constraint(s3c):
    name = new_name()
    s3c.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    s3c.delete_bucket(Bucket=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.create_bucket(Bucket=name,
                          CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code_of(e.value) == "IllegalLocationConstraintException"
    assert name not in [b["Name"] for b in s3c.list_buckets()["Buckets"]]


def test_create_twice_and_other_owner(s3, s3c, bucket):
    with pytest.raises(s3c.exceptions.BucketAlreadyOwnedByYou) as e:
        s3c.create_bucket(Bucket=bucket)
    assert status_of(e.value) == 409
    other = s3.client("other")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.create_bucket(Bucket=bucket)
    assert code_of(e.value) == "BucketAlreadyExists" and status_of(e.value) == 409


def test_other_account_is_denied(s3, s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"secret")
    other = s3.client("other")
    assert bucket not in [b["Name"] for b in other.list_buckets()["Buckets"]]
    for call in (lambda: other.list_objects_v2(Bucket=bucket),
                 lambda: other.get_object(Bucket=bucket, Key="k"),
                 lambda: other.put_object(Bucket=bucket, Key="k", Body=b"x"),
                 lambda: other.delete_object(Bucket=bucket, Key="k"),
                 lambda: other.delete_bucket(Bucket=bucket),
                 lambda: other.create_multipart_upload(Bucket=bucket, Key="k"),
                 lambda: other.copy_object(Bucket=bucket, Key="k2",
                                           CopySource={"Bucket": bucket, "Key": "k"})):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e.value) == "AccessDenied", e.value
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.head_bucket(Bucket=bucket)
    assert status_of(e.value) == 403
    assert s3c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"secret"


def test_copy_from_other_accounts_bucket_is_denied(s3, s3c, bucket, make_s3_bucket):
    s3c.put_object(Bucket=bucket, Key="k", Body=b"secret")
    theirs = make_s3_bucket("other")
    other = s3.client("other")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.copy_object(Bucket=theirs, Key="stolen", CopySource={"Bucket": bucket, "Key": "k"})
    assert code_of(e.value) == "AccessDenied"
    assert other.list_objects_v2(Bucket=theirs)["KeyCount"] == 0


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Upper", "bad_name", "-start", "end-",
                                  "a..b", "192.168.1.1", "xn--abc", "abc-s3alias", "a b"])
def test_invalid_bucket_names(raw, name):
    r = raw.request("PUT", "/" + name.replace(" ", "%20"))
    assert r.status == 400 and r.error_code() == "InvalidBucketName", (name, r)


def test_delete_non_empty_bucket(s3c, bucket):
    s3c.put_object(Bucket=bucket, Key="x", Body=b"1")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.delete_bucket(Bucket=bucket)
    assert code_of(e.value) == "BucketNotEmpty" and status_of(e.value) == 409
    s3c.delete_object(Bucket=bucket, Key="x")
    s3c.delete_bucket(Bucket=bucket)


def test_list_buckets_pagination(s3, make_s3_bucket):
    names = sorted(make_s3_bucket("other") for _ in range(3))
    other = s3.client("other")
    got, token = [], None
    while True:
        kw = {"MaxBuckets": 2}
        if token:
            kw["ContinuationToken"] = token
        r = other.list_buckets(**kw)
        got += [b["Name"] for b in r["Buckets"]]
        token = r.get("ContinuationToken")
        if not token:
            break
    assert [n for n in got if n in names] == names


def test_bucket_subresources(s3c, bucket):
    acl = s3c.get_bucket_acl(Bucket=bucket)
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL"
    assert acl["Owner"]["ID"] == "root"
    assert "Status" not in s3c.get_bucket_versioning(Bucket=bucket)
    for call, code in ((s3c.get_bucket_tagging, "NoSuchTagSet"),
                       (s3c.get_bucket_policy, "NoSuchBucketPolicy"),
                       (s3c.get_bucket_cors, "NoSuchCORSConfiguration"),
                       (s3c.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration"),
                       (s3c.get_bucket_encryption,
                        "ServerSideEncryptionConfigurationNotFoundError")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(Bucket=bucket)
        assert code_of(e.value) == code and status_of(e.value) == 404
    s3c.put_bucket_acl(Bucket=bucket, ACL="private")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert code_of(e.value) == "AccessControlListNotSupported"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert code_of(e.value) == "NotImplemented" and status_of(e.value) == 501
    s3c.delete_bucket_tagging(Bucket=bucket)
    assert s3c.get_bucket_logging(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_virtual_host_style(tmp_path):
    from s3kit import S3Server
    server = S3Server(tmp_path, domain="s3.test").start()
    try:
        path_client = server.client()
        name = new_name()
        path_client.create_bucket(Bucket=name)
        path_client.put_object(Bucket=name, Key="dir/obj", Body=b"vhost")
        # Talk virtual-host style by sending Host: <bucket>.s3.test to the loopback port.
        from s3kit import RawClient
        raw = RawClient(server)
        host = f"{name}.s3.test:{server.port}"
        hdrs = raw.sign("GET", "/dir/obj", headers={"Host": host})
        r = raw.request("GET", "/dir/obj", headers=hdrs, sign=False)
        assert r.status == 200 and r.body == b"vhost"
        hdrs = raw.sign("GET", "/", query="list-type=2", headers={"Host": host})
        r = raw.request("GET", "/", query="list-type=2", headers=hdrs, sign=False)
        assert r.status == 200 and b"<Key>dir/obj</Key>" in r.body
        # Host equal to the domain itself is path style.
        hdrs = raw.sign("GET", f"/{name}/dir/obj", headers={"Host": f"s3.test:{server.port}"})
        r = raw.request("GET", f"/{name}/dir/obj", headers=hdrs, sign=False)
        assert r.status == 200 and r.body == b"vhost"
    finally:
        server.stop()
