"""The S3 gateway as an ASGI 3 application (served by hypercorn's trio worker).

Per request: parse (bucket/key from path or virtual host), name the operation, authenticate
(SigV4 header or presigned URL), dispatch to the controller, send the response, count it.
Everything a handler raises becomes an S3 XML error (unknown exceptions: InternalError 500,
logged); a response whose body stream fails after the headers went out is aborted (the
connection closes without the final chunk, so the client sees a short body, never a clean end).

Unauthenticated endpoints: ``GET /health`` (200 ``ok``) and ``GET /metrics`` (Prometheus text
of the node, see :mod:`.metrics`). They answer only requests without credentials, so a bucket named
``health`` or ``metrics`` still works for signed requests.
"""

from __future__ import annotations

import logging
import time

import prometheus_client
import trio

from ..accounts import Accounts
from ..membudget import MemoryBudget
from ..meta import MetaError
from ..namespace import (BucketNotEmpty, ConflictError, Namespace, NoSuchBucket, NoSuchUpload,
                         PartChanged)
from ..store import StoreFull, StoreReadError, StoreUnavailable
from . import metrics
from .auth import access_key_id, authenticate
from .body import BodyReader, ClientDisconnected
from .controllers.base import Gateway, check_key
from .controllers.bucket import BucketController
from .controllers.listing import ListingController
from .controllers.multipart import MultipartController
from .controllers.object import ObjectController
from .controllers.service import ServiceController
from .errors import CODES, S3Error
from .http_compat import RECV_SIZE
from .request import S3Request, new_request_id, parse_request
from .response import Response
from .router import Router, operation
from .sigv4 import S3AuthError
from .xmlio import E, to_bytes

log = logging.getLogger(__name__)
access_log = logging.getLogger("appliance.s3.access")

ERROR_DRAIN_BYTES = 1 << 20
"""Before answering an error, read up to this much of an unread request body so the
connection can be reused; beyond it the error goes out with ``Connection: close``."""
ERROR_DRAIN_TIMEOUT = 5.0


def _allow_412_bodies() -> bool:
    """hypercorn 0.13 (Debian 12) drops the body of every 412 response (``suppress_body``
    lists 412; RFC 9110 does not say so and later hypercorn versions dropped it), which breaks
    S3's PreconditionFailed XML and leaves a Content-Length the body never matches. Patch the
    name hypercorn's HTTP stream uses. Returns whether 412 bodies can be sent."""
    try:
        from hypercorn.protocol import http_stream
    except ImportError:  # another ASGI server: nothing to fix
        return True
    original = http_stream.suppress_body
    if not original("GET", 412):
        return True

    def suppress_body(method: str, status_code: int) -> bool:
        return method == "HEAD" or 100 <= status_code < 200 or status_code in (204, 304)

    http_stream.suppress_body = suppress_body
    return not http_stream.suppress_body("GET", 412)


def _larger_reads() -> None:
    """hypercorn's trio worker reads sockets 64 KiB at a time (``MAX_RECV``), and each read
    travels through h11, an ASGI message and a memory channel: ~1.2 ms of CPU per MiB of
    upload on our machines, as much as MD5. Reading up to 1 MiB per call cuts the HTTP +
    body-reader cost of a PUT to ~0.5 ms/MiB (one-stream upload 700 MB/s with MD5 vs 300-360).
    Only the buffer size of a read changes: a read returns what is there."""
    try:
        from hypercorn.trio import tcp_server
    except ImportError:
        return
    if getattr(tcp_server, "MAX_RECV", RECV_SIZE) < RECV_SIZE:
        tcp_server.MAX_RECV = RECV_SIZE


class S3App:
    """ASGI 3 callable: ``S3App(namespace, accounts, region=..., domain=...)``.

    ``domain``: enables virtual-host style addressing (``Host: bucket.DOMAIN``).
    ``body_timeout``: seconds a request body may stall before RequestTimeout.
    ``memory_budget``: bytes the data buffers of the requests in flight may hold (None: no
    limit); a request that finds no room within ``admission_wait`` seconds gets 503 SlowDown
    (appliance.membudget).
    """

    def __init__(self, namespace: Namespace, accounts: Accounts, *, region: str = "us-east-1",
                 domain: str | None = None, body_timeout: float = 60.0,
                 memory_budget: int | None = None, admission_wait: float = 10.0):
        memory = MemoryBudget(memory_budget) if memory_budget else None
        self.gw = Gateway(namespace, accounts, region, domain, body_timeout, memory,
                          admission_wait)
        if memory is not None:
            metrics.MEMORY_BUDGET.set(memory.capacity)
        global _BODY_412
        _BODY_412 = _allow_412_bodies()
        _larger_reads()
        self.router = Router()
        for controller in (ServiceController, BucketController, ListingController,
                           ObjectController, MultipartController):
            self.router.register(controller(self.gw).handlers())

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    @staticmethod
    async def _lifespan(receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- one HTTP request ----------------------------------------------------------------------
    async def _http(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        out = _Sender(send)
        req: S3Request | None = None
        op = "Unknown"
        status = 0
        body = BodyReader(receive, {}, self.gw.body_timeout)
        try:
            try:
                req = parse_request(scope, self.gw.domain)
                body = BodyReader(receive, req.headers, self.gw.body_timeout)
                req.body = body
                special = self._special(req)
                if special is not None:
                    op = special
                    resp = self._special_response(special)
                else:
                    op = req.op = operation(req)
                    resp = await self._dispatch(req)
                status = resp.status
                await out.respond(resp, scope["method"] == "HEAD", receive)
            except ClientDisconnected:
                status = 499
                log.info("client went away during %s %s", scope["method"], scope.get("path"))
            except _Aborted as e:
                status = 499 if isinstance(e.__cause__, ClientDisconnected) else -1
                log.warning("response to %s %s aborted after %d bytes: %s", scope["method"],
                            scope.get("path"), out.sent, e.__cause__)
            except BaseException as exc:  # noqa: BLE001 - mapped to an S3 error below
                err = self._to_s3_error(exc, scope)
                if err is None:
                    raise
                status = err.status
                if out.started:
                    log.warning("aborting response after %d bytes: %s", out.sent, err)
                else:
                    await self._send_error(out, err, req, body, scope)
        finally:
            if req is not None:
                self.gw.release(req)
            metrics.IN_FLIGHT.dec()
            dt = time.perf_counter() - t0
            metrics.REQUESTS.labels(op, "aborted" if status < 0 else str(status)).inc()
            metrics.LATENCY.labels(op).observe(dt)
            if body.received:
                metrics.BYTES_IN.labels(op).inc(body.received)
            if out.sent:
                metrics.BYTES_OUT.labels(op).inc(out.sent)
            access_log.info("%s %s %s %s %s %.4fs in=%d out=%d user=%s id=%s",
                            (scope.get("client") or ("-",))[0], scope["method"],
                            _printable_path(scope), op, "aborted" if status < 0 else status, dt,
                            body.received, out.sent,
                            req.user if req else "-", req.request_id if req else "-")

    async def _dispatch(self, req: S3Request) -> Response:
        auth, user = await authenticate(req, self.gw.accounts)
        req.auth, req.user = auth, user
        req.body.set_auth(auth)
        req.op, handler = self.router.resolve(req)
        if req.key is not None:
            check_key(req.key)
        return await handler(req)

    @staticmethod
    def _special(req: S3Request) -> str | None:
        if req.method not in ("GET", "HEAD") or req.key is not None or req.query_string:
            return None
        if req.bucket not in ("health", "metrics") or access_key_id(req) is not None:
            return None
        if "authorization" in req.headers:
            return None
        return "Health" if req.bucket == "health" else "Metrics"

    @staticmethod
    def _special_response(name: str) -> Response:
        if name == "Health":
            return Response(200, [("content-type", "text/plain")], b"ok")
        return Response(200, [("content-type", prometheus_client.CONTENT_TYPE_LATEST)],
                        metrics.exposition())

    # -- errors --------------------------------------------------------------------------------
    @staticmethod
    def _to_s3_error(exc: BaseException, scope) -> S3Error | None:
        """Map an exception to the S3 error to answer; None for trio.Cancelled (re-raised)."""
        if isinstance(exc, BaseExceptionGroup):
            inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
            if not inner:
                return None
            exc = inner[0]
        if isinstance(exc, trio.Cancelled) or not isinstance(exc, Exception):
            return None
        if isinstance(exc, S3Error):
            return exc
        if isinstance(exc, S3AuthError):
            return S3Error(exc.code, exc.message, status=exc.status, **exc.details)
        if isinstance(exc, NoSuchBucket):
            return S3Error("NoSuchBucket", BucketName=str(exc))
        if isinstance(exc, NoSuchUpload):
            return S3Error("NoSuchUpload", UploadId=str(exc))
        if isinstance(exc, BucketNotEmpty):
            return S3Error("BucketNotEmpty", BucketName=str(exc))
        if isinstance(exc, PartChanged):
            return S3Error("InvalidPart", f"Part {exc} was replaced while completing the upload")
        if isinstance(exc, ConflictError):
            return S3Error("ConditionalRequestConflict")
        if isinstance(exc, StoreFull):
            log.warning("storage full: %s", exc)
            return S3Error("StorageFull", f"{CODES['StorageFull'][1]} ({exc})")
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc)
            return S3Error("ServiceUnavailable", f"Not enough storage devices available: {exc}")
        if isinstance(exc, StoreReadError):
            log.error("object data unreadable (%s %s): %s", scope["method"],
                      _printable_path(scope), exc)
            return S3Error("ServiceUnavailable",
                           f"The object's data cannot be read right now: {exc}")
        if isinstance(exc, MetaError):
            log.error("metadata error: %s", exc)
            return S3Error("ServiceUnavailable", "The metadata store is unavailable")
        log.exception("internal error in %s %s", scope["method"], _printable_path(scope))
        return S3Error("InternalError")

    async def _send_error(self, out: _Sender, err: S3Error, req: S3Request | None,
                          body: BodyReader, scope) -> None:
        request_id = req.request_id if req else new_request_id()
        headers = [(k, v) for k, v in err.headers.items()]
        # Read what is left of a small request body so the connection stays usable.
        if not body.complete and (body.has_body or body.started):
            with trio.move_on_after(ERROR_DRAIN_TIMEOUT):
                await body.drain(body.received + ERROR_DRAIN_BYTES)
            if not body.complete:
                headers.append(("connection", "close"))
        if err.status == 304:
            await out.respond(Response(304, headers), True, None, request_id)
            return
        resource = req.resource if req else scope.get("path", "/")
        root = E("Error", E("Code", err.code), E("Message", err.message),
                 [E(k, v) for k, v in err.details.items()],
                 E("Resource", resource), E("RequestId", request_id))
        headers.append(("content-type", "application/xml"))
        await out.respond(Response(err.status, headers, to_bytes(root, namespace=False)),
                          scope["method"] == "HEAD", None, request_id)


_BODY_412 = True
"""False when the server drops 412 bodies: such responses then go out empty."""


class _Aborted(Exception):
    """The response body failed after the headers were sent; the cause is chained."""


class _Sender:
    """Sends a Response through ASGI, counting bytes; aborts streams that fail mid-way."""

    def __init__(self, send):
        self._send = send
        self.started = False
        self.sent = 0

    async def respond(self, resp: Response, head: bool, receive,
                      request_id: str | None = None) -> None:
        headers = [(b"x-amz-request-id", (request_id or new_request_id()).encode())]
        has_length = False
        for k, v in resp.headers:
            if k == "content-length":
                has_length = True
            headers.append((k.encode("latin-1"), _hval(v)))
        body = resp.body
        if resp.status == 412 and not _BODY_412:
            body = b""
        stream = not isinstance(body, (bytes, bytearray))
        if not has_length and resp.status not in (204, 304) and resp.status >= 200:
            n = resp.length if resp.length is not None else (None if stream else len(body))
            if n is not None:
                headers.append((b"content-length", str(n).encode()))
        if not stream:
            self.started = True
            await self._send({"type": "http.response.start", "status": resp.status,
                              "headers": headers})
            payload = b"" if head else bytes(body)
            self.sent += len(payload)
            await self._send({"type": "http.response.body", "body": payload})
            return
        # Streamed body: fetch the first piece before the status line, so an unreadable
        # object still gets a proper error response.
        it = aiter(body)
        try:
            first = await anext(it)
        except StopAsyncIteration:
            first = b""
        self.started = True
        await self._send({"type": "http.response.start", "status": resp.status,
                          "headers": headers})
        try:
            async with trio.open_nursery() as nursery:
                if receive is not None:
                    nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                piece = first
                while True:
                    if piece:
                        self.sent += len(piece)
                        # A memoryview (a segment read straight from the shards) goes
                        # out uncopied through h11_send's shim; bytes() would copy it.
                        body = piece if isinstance(piece, (bytes, memoryview)) else bytes(piece)
                        await self._send({"type": "http.response.body", "body": body,
                                          "more_body": True})
                    try:
                        piece = await anext(it)
                    except StopAsyncIteration:
                        break
                nursery.cancel_scope.cancel()
        except Exception as e:  # noqa: BLE001 - the connection is aborted, the cause logged
            raise _Aborted(str(e)) from e
        if self.sent != (resp.length if resp.length is not None else self.sent):
            raise _Aborted(f"sent {self.sent} of {resp.length} bytes")
        await self._send({"type": "http.response.body", "body": b""})


async def _watch_disconnect(receive, cancel_scope: trio.CancelScope) -> None:
    """Cancel the response stream when the client goes away (stop reading the store)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            cancel_scope.cancel()
            return


def _hval(v: str) -> bytes:
    try:
        return v.encode("latin-1")
    except UnicodeEncodeError:
        return v.encode("utf-8")


def _printable_path(scope) -> str:
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    p = bytes(raw).decode("latin-1")
    qs = scope.get("query_string", b"")
    return p + ("?" + bytes(qs).decode("latin-1") if qs else "")
