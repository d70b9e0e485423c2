"""A real boto3 client whose requests are captured instead of sent: what botocore would put on
the wire (signed headers, aws-chunked bodies), for the protocol unit tests."""

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config


class _EmptyBody:
    def stream(self, **_):
        return iter([b""])

    def read(self, *_args, **_kwargs):
        return b""


def capturing_client(endpoint: str, *, style: str = "path", akid: str = "AKID",
                     secret: str = "secret", **config):
    """A boto3 S3 client; every prepared request lands in ``client.captured`` and gets an
    empty 200 answer."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": style}, **config),
    )
    client.captured = []

    def before_send(request, **_):
        client.captured.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyBody())

    client.meta.events.register("before-send.s3", before_send)
    return client


def put_request(endpoint: str, **params):
    """The prepared request of ``put_object(Bucket="b", Key="k", **params)``."""
    client = capturing_client(endpoint)
    client.put_object(Bucket="b", Key="k", **params)
    return client.captured[-1]


def lower_headers(request) -> dict[str, str]:
    return {name.lower(): (v.decode() if isinstance(v, bytes) else v)
            for name, v in request.headers.items()}
