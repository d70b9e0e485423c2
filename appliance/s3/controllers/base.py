"""What every controller shares: the namespace, the gateway settings, bucket access checks."""

from __future__ import annotations

from dataclasses import dataclass

from ...accounts import Accounts
from ...membudget import BudgetExceeded, MemoryBudget
from ...namespace import Bucket, Namespace, ObjectRecord
from .. import metrics
from ..conditional import check_preconditions
from ..copying import parse_copy_source
from ..errors import S3Error
from ..request import MAX_KEY_BYTES, S3Request


@dataclass
class Gateway:
    """Settings and services of one S3App, handed to every controller."""

    namespace: Namespace
    accounts: Accounts
    region: str = "us-east-1"
    domain: str | None = None
    body_timeout: float = 60.0
    """Seconds a request body may stall before the request fails with RequestTimeout."""
    memory: MemoryBudget | None = None
    """Bytes the data buffers of this process's requests may hold (None: no limit)."""
    admission_wait: float = 10.0
    """Seconds a request waits for room in ``memory`` before 503 SlowDown (MinIO's
    requests_deadline is also 10 s; the AWS SDKs' read timeout is 60 s)."""

    async def admit(self, req: S3Request, nbytes: int) -> None:
        """Hold ``nbytes`` of ``memory`` until the request has been answered (S3App releases
        it). Raises S3Error SlowDown (503), which the AWS SDKs retry with backoff, when the
        room is not free within ``admission_wait``."""
        if self.memory is None or nbytes <= 0:
            return
        lease = self.memory.try_reserve(nbytes)
        if lease is None:  # the gauge moves only for requests that wait
            metrics.MEMORY_WAITING.inc()
            try:
                lease = await self.memory.reserve(nbytes, self.admission_wait)
            except BudgetExceeded:
                metrics.SLOWDOWN.inc()
                raise S3Error("SlowDown") from None
            finally:
                metrics.MEMORY_WAITING.dec()
        req.leases.append(lease)
        metrics.MEMORY_RESERVED.set(self.memory.used)

    def release(self, req: S3Request) -> None:
        """Give back what :meth:`admit` reserved for ``req``."""
        if req.leases:
            for lease in req.leases:
                lease.release()
            req.leases.clear()
            metrics.MEMORY_RESERVED.set(self.memory.used)


class Controller:
    """Base class: ``handlers()`` maps AWS operation names to bound coroutine methods."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.ns = gw.namespace

    def handlers(self) -> dict:
        raise NotImplementedError

    async def bucket(self, req: S3Request, name: str | None = None) -> Bucket:
        """The request's bucket (or ``name``), checked to belong to the caller.

        Raises S3Error NoSuchBucket (404), AccessDenied (403) when another account owns it or
        it is not owned by ``x-amz-expected-bucket-owner`` (for the request's own bucket)."""
        own = name is None
        name = req.bucket if name is None else name
        b = await self.ns.get_bucket(name)
        if b is None:
            raise S3Error("NoSuchBucket", BucketName=name)
        if b.owner != req.user:
            raise S3Error("AccessDenied")
        expected = req.header("x-amz-expected-bucket-owner")
        if own and expected is not None and expected != b.owner:
            raise S3Error("AccessDenied")
        return b

    async def copy_source(self, req: S3Request) -> tuple[str, str, ObjectRecord]:
        """(bucket, key, record) named by ``x-amz-copy-source``, readable by the caller and
        passing the ``x-amz-copy-source-if-*`` conditions. Raises S3Error InvalidArgument,
        NoSuchBucket, AccessDenied, NoSuchKey, PreconditionFailed."""
        src_bucket, src_key = parse_copy_source(req.header("x-amz-copy-source"))
        await self.bucket(req, src_bucket)
        src = await self.ns.get_object(src_bucket, src_key)
        if src is None:
            raise S3Error("NoSuchKey", Key=src_key)
        check_preconditions(req.headers, src, read=False, prefix="x-amz-copy-source-")
        return src_bucket, src_key, src


def check_key(key: str) -> None:
    """Raises KeyTooLongError when the UTF-8 key exceeds 1024 bytes."""
    n = len(key.encode("utf-8"))
    if n > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(n), MaxSizeAllowed=str(MAX_KEY_BYTES))


def owner_xml(user: str):
    """``<Owner><ID>user</ID><DisplayName>user</DisplayName></Owner>`` children."""
    from ..xmlio import E
    return E("Owner", E("ID", user), E("DisplayName", user))
