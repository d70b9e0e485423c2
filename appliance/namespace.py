"""Buckets, object records and multipart uploads, kept in the metadata store.

This is the object index that every front end shares (S3 today, the filesystem view later):
it maps ``(bucket, key)`` to an :class:`ObjectRecord` that points at store extents. Data is
written to the store *first*; the record is then committed with one metadata transaction (the
linearisation point, DESIGN.md §4). The same transaction clears the store's pending-write
intents for the new extents and queues the replaced record's extents for garbage collection, so
a crash at any point leaves either the old or the new object and no unreferenced shards once the
store's cleanup has run.

Metadata key layout (bytes; keys sort as unsigned bytes, which is S3's listing order):

- ``b/<bucket>``                      bucket record
- ``o/<bucket>/<key>``                object record
- ``u/<bucket>/<key>\\0<upload id>``   multipart upload
- ``p/<bucket>/<upload id>/<part:05d>`` uploaded part
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import asdict, dataclass, field

import trio

from .diskspace import DiskFull
from .meta import KV, Compare, Delete, MetaStore, Put, prefix_end
from .store import Extent, Reference, Store, StoreFull


DELETE_MARK_TTL_S = 10.0
"""How long a DeleteBucket in progress holds up commits to that bucket (see delete_bucket)."""


class NamespaceError(Exception):
    pass


class NoSuchBucket(NamespaceError):
    pass


class BucketExists(NamespaceError):
    def __init__(self, owner: str):
        super().__init__(owner)
        self.owner = owner


class BucketNotEmpty(NamespaceError):
    pass


class NoSuchUpload(NamespaceError):
    pass


class PartChanged(NamespaceError):
    """A part named in CompleteMultipartUpload was replaced while completing."""


class ConflictError(NamespaceError):
    """The object or upload changed between read and commit (a precondition no longer holds)."""


@dataclass
class Bucket:
    name: str
    owner: str
    created: float
    deleting: float = 0.0
    """When a DeleteBucket began (0: none); see Namespace.delete_bucket."""


@dataclass
class ObjectRecord:
    """One object version as stored.

    ``etag`` is the S3 ETag without quotes. ``headers`` holds the stored content headers
    (lower-case names: content-type, content-encoding, content-disposition, content-language,
    cache-control, expires); ``meta`` the user metadata (names without ``x-amz-meta-``);
    ``checksums`` maps an algorithm name (``CRC32``, ``CRC32C``, ``CRC64NVME``, ``SHA1``,
    ``SHA256``) to its base64 value, with ``checksum_type`` ``FULL_OBJECT`` or ``COMPOSITE``.
    ``parts`` lists the part sizes of a multipart object (empty otherwise).
    """

    key: str
    size: int
    etag: str
    mtime: float
    extents: list[Extent]
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    checksum_type: str = ""
    parts: list[int] = field(default_factory=list)
    version: str = ""
    mod_rev: int = 0
    """Metadata revision of this record; pass it back to commit for compare-and-swap."""

    def to_bytes(self) -> bytes:
        d = asdict(self)
        d.pop("key")
        d.pop("mod_rev")
        d["extents"] = [e.to_json() for e in self.extents]
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, key: str, raw: bytes, mod_rev: int) -> ObjectRecord:
        d = json.loads(raw)
        d["extents"] = [Extent.from_json(e) for e in d["extents"]]
        return cls(key=key, mod_rev=mod_rev, **d)


@dataclass
class Upload:
    bucket: str
    key: str
    upload_id: str
    initiated: float
    owner: str
    template: dict
    """Fields of the future ObjectRecord given at CreateMultipartUpload (headers, meta, ...)."""
    mod_rev: int = 0


@dataclass
class Part:
    number: int
    size: int
    etag: str
    mtime: float
    extent: Extent
    checksums: dict[str, str] = field(default_factory=dict)


def _bkey(bucket: str) -> bytes:
    return b"b/" + bucket.encode()


def _okey(bucket: str, key: str) -> bytes:
    return b"o/" + bucket.encode() + b"/" + key.encode()


def _ukey(bucket: str, key: str, upload_id: str) -> bytes:
    return b"u/" + bucket.encode() + b"/" + key.encode() + b"\0" + upload_id.encode()


def _pprefix(bucket: str, upload_id: str) -> bytes:
    return b"p/" + bucket.encode() + b"/" + upload_id.encode() + b"/"


class Namespace:
    """Object index over a :class:`MetaStore`, with data in a :class:`Store`."""

    def __init__(self, meta: MetaStore, store: Store):
        self.meta = meta
        self.store = store

    # -- buckets ---------------------------------------------------------------------------
    async def create_bucket(self, name: str, owner: str) -> Bucket:
        """Raises BucketExists(owner) if the name is taken (by anyone), StoreFull."""
        self.check_room()
        b = Bucket(name, owner, time.time())
        res = await self.meta.txn([Compare(_bkey(name), 0)],
                                  [Put(_bkey(name), json.dumps(asdict(b)).encode())])
        if not res.succeeded:
            existing = await self.get_bucket(name)
            raise BucketExists(existing.owner if existing else "")
        return b

    async def get_bucket(self, name: str) -> Bucket | None:
        kv = await self.meta.get(_bkey(name))
        return Bucket(**json.loads(kv.value)) if kv else None

    async def list_buckets(self, owner: str | None = None) -> list[Bucket]:
        out = [Bucket(**json.loads(kv.value)) for kv in await self.meta.scan_prefix(b"b/")]
        return [b for b in out if owner is None or b.owner == owner]

    async def delete_bucket(self, name: str) -> None:
        """Raises NoSuchBucket, or BucketNotEmpty when it holds objects or uploads.

        The bucket record is first marked as being deleted, which changes its revision: a
        commit that read the bucket before (commit_object, create_upload compare it) fails
        and waits for the outcome, so nothing can land between the emptiness check and the
        delete. The mark is removed again when the bucket turns out not to be empty."""
        kv = await self.meta.get(_bkey(name))
        if kv is None:
            raise NoSuchBucket(name)
        marked = {**json.loads(kv.value), "deleting": time.time()}
        res = await self.meta.txn([Compare(kv.key, kv.mod_rev)],
                                  [Put(kv.key, json.dumps(marked).encode())])
        if not res.succeeded:
            raise ConflictError(name)
        marked_rev = res.revision
        try:
            for prefix in (b"o/", b"u/"):
                p = prefix + name.encode() + b"/"
                if await self.meta.scan(p, prefix_end(p), limit=1):
                    raise BucketNotEmpty(name)
            if not (await self.meta.txn([Compare(kv.key, marked_rev)],
                                        [Delete(kv.key)])).succeeded:
                raise ConflictError(name)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.meta.txn([Compare(kv.key, marked_rev)], [Put(kv.key, kv.value)])
            raise

    async def _live_bucket(self, name: str) -> KV:
        """The bucket record a commit compares against, once no DeleteBucket is in progress
        (a mark older than DELETE_MARK_TTL_S is left over from a crash and ignored).
        Raises NoSuchBucket, ConflictError if a deletion takes implausibly long."""
        deadline = trio.current_time() + DELETE_MARK_TTL_S
        while True:
            kv = await self.meta.get(_bkey(name))
            if kv is None:
                raise NoSuchBucket(name)
            mark = json.loads(kv.value).get("deleting", 0)
            if not mark or time.time() - mark > DELETE_MARK_TTL_S:
                return kv
            if trio.current_time() > deadline:
                raise ConflictError(name)
            await trio.sleep(0.01)

    # -- objects ---------------------------------------------------------------------------
    async def write_data(self, body: AsyncIterable[bytes]) -> Extent:
        """Store a byte stream durably (K+1 shards); returns the extent to commit or discard.
        Raises StoreFull when the metadata's disk or enough data disks are within their
        free-space reserve (diskspace), StoreUnavailable."""
        self.check_room()
        return await self.store.write(body)

    def check_room(self) -> None:
        """Raise StoreFull when the metadata's disk is within its free-space reserve: new
        objects, uploads and buckets are refused there; deletes go on and free space."""
        try:
            self.meta.check_room()
        except DiskFull as e:
            raise StoreFull(f"metadata disk: {e.strerror}") from e

    def write_footprint(self, length: int | None) -> int:
        """Memory one :meth:`write_data` of ``length`` bytes (None: unknown) holds at most."""
        return self.store.write_footprint(length)

    def read_footprint(self, record: ObjectRecord, start: int = 0, end: int | None = None) -> int:
        """Memory one :meth:`read` of ``[start, end)`` of the object holds at most."""
        return self.store.read_footprint(record.extents, start,
                                         record.size if end is None else end)

    async def discard(self, extents: list[Extent]) -> None:
        """Give up extents that were written but will not be committed."""
        await self.store.discard(extents)

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        kv = await self.meta.get(_okey(bucket, key))
        return ObjectRecord.from_bytes(key, kv.value, kv.mod_rev) if kv else None

    async def commit_object(
        self, bucket: str, record: ObjectRecord, *, expect_rev: int | None = None,
        consumed: list[Extent] | None = None, extra_ops: list = (), extra_compare: list = (),
    ) -> ObjectRecord:
        """Make ``record`` the current version of ``record.key`` in one metadata transaction.

        ``expect_rev``: compare-and-swap on the previous record's ``mod_rev`` (0: must not
        exist); None: last writer wins. ``consumed``: extents whose pending-write intents this
        commit clears (default: the record's own). The previous record's extents are queued for
        garbage collection in the same transaction. Raises NoSuchBucket, ConflictError.
        """
        okey = _okey(bucket, record.key)
        record.version = record.version or secrets.token_hex(8)
        bucket_kv = await self._live_bucket(bucket)
        while True:
            old = await self.meta.get(okey)
            if expect_rev is not None and (old.mod_rev if old else 0) != expect_rev:
                raise ConflictError(record.key)
            ops = [Put(okey, record.to_bytes()), *extra_ops]
            ops += self.store.commit_ops(record.extents if consumed is None else consumed)
            if old is not None:
                old_rec = ObjectRecord.from_bytes(record.key, old.value, old.mod_rev)
                ops += self.store.release_ops(old_rec.extents)
            res = await self.meta.txn(
                [Compare(bucket_kv.key, bucket_kv.mod_rev),
                 Compare(okey, old.mod_rev if old else 0), *extra_compare], ops)
            if res.succeeded:
                record.mod_rev = res.revision
                return record
            if bucket_kv.key in res.failed_keys:
                bucket_kv = await self._live_bucket(bucket)
            elif expect_rev is not None or any(c.key in res.failed_keys for c in extra_compare):
                raise ConflictError(record.key)
            # else: a concurrent writer replaced the object; retry against its record.

    async def delete_object(self, bucket: str, key: str, *, expect_rev: int | None = None) -> bool:
        """Delete ``key``; True if it existed. Its extents are queued for garbage collection."""
        okey = _okey(bucket, key)
        while True:
            old = await self.meta.get(okey)
            if old is None:
                return False
            if expect_rev is not None and old.mod_rev != expect_rev:
                raise ConflictError(key)
            rec = ObjectRecord.from_bytes(key, old.value, old.mod_rev)
            res = await self.meta.txn([Compare(okey, old.mod_rev)],
                                      [Delete(okey), *self.store.release_ops(rec.extents)])
            if res.succeeded:
                return True

    async def list_objects(
        self, bucket: str, prefix: str = "", *, start: bytes = b"", limit: int = 1000
    ) -> list[ObjectRecord]:
        """Records whose key starts with ``prefix`` and whose UTF-8 key is >= ``start``, in order."""
        base = b"o/" + bucket.encode() + b"/"
        lo = base + max(prefix.encode(), start)
        hi = prefix_end(base + prefix.encode())
        kvs = await self.meta.scan(lo, hi, limit=limit)
        return [ObjectRecord.from_bytes(kv.key[len(base):].decode(), kv.value, kv.mod_rev)
                for kv in kvs]

    def read(self, record: ObjectRecord, start: int = 0, end: int | None = None
             ) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the object, streamed, checksums verified by the store."""
        return self.store.read_many(record.extents, start, record.size if end is None else end)

    async def referenced_extents(self) -> AsyncIterator[Extent]:
        """Every extent an object record or an uploaded part points at (for fsck)."""
        async for ref in self.references():
            yield ref.extent

    async def references(self, after: bytes = b"") -> AsyncIterator[Reference]:
        """Every extent an object record or an uploaded part points at, with the record's
        key and revision, in key order; ``after``: only those of records after that key
        (where a walk left off)."""
        for prefix in (b"o/", b"p/"):
            if after >= prefix_end(prefix):
                continue
            start = after
            while True:
                kvs = await self.meta.scan_prefix(prefix, after=start, limit=1000)
                for kv in kvs:
                    if prefix == b"o/":
                        extents = ObjectRecord.from_bytes("", kv.value, kv.mod_rev).extents
                    else:
                        extents = [self._part_from(kv.value).extent]
                    for e in extents:
                        yield Reference(e, kv.key, kv.mod_rev)
                if len(kvs) < 1000:
                    break
                start = kvs[-1].key

    # -- multipart uploads -------------------------------------------------------------------
    async def create_upload(self, bucket: str, key: str, owner: str, template: dict) -> Upload:
        """A new multipart upload. Raises NoSuchBucket, StoreFull."""
        self.check_room()
        up = Upload(bucket, key, secrets.token_urlsafe(24), time.time(), owner, template)
        while True:
            bkv = await self._live_bucket(bucket)
            res = await self.meta.txn([Compare(bkv.key, bkv.mod_rev)],
                                      [Put(_ukey(bucket, key, up.upload_id), self._upload_bytes(up))])
            if res.succeeded:
                return up

    @staticmethod
    def _upload_bytes(up: Upload) -> bytes:
        d = asdict(up)
        d.pop("mod_rev")
        return json.dumps(d, separators=(",", ":")).encode()

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload | None:
        kv = await self.meta.get(_ukey(bucket, key, upload_id))
        if kv is None:
            return None
        return Upload(**json.loads(kv.value), mod_rev=kv.mod_rev)

    async def list_uploads(
        self, bucket: str, prefix: str = "", *, key_marker: str = "", upload_id_marker: str = "",
        limit: int = 1000,
    ) -> list[Upload]:
        """Uploads ordered by (key, upload id), after the markers (S3 ListMultipartUploads)."""
        base = b"u/" + bucket.encode() + b"/"
        lo = base + prefix.encode()
        if key_marker:
            after = (base + key_marker.encode() + b"\0" + upload_id_marker.encode() + b"\0"
                     if upload_id_marker else base + key_marker.encode() + b"\1")
            lo = max(lo, after)
        kvs = await self.meta.scan(lo, prefix_end(base + prefix.encode()), limit=limit)
        return [Upload(**json.loads(kv.value), mod_rev=kv.mod_rev) for kv in kvs]

    async def put_part(self, upload: Upload, part: Part) -> None:
        """Record an uploaded part (replacing a previous one with that number). Raises
        NoSuchUpload if the upload was completed or aborted meanwhile (the part is discarded).

        The upload record is rewritten in the same transaction so that a concurrent Complete,
        which compares it, notices the new part instead of leaking it."""
        pkey = _pprefix(upload.bucket, upload.upload_id) + b"%05d" % part.number
        ukey = _ukey(upload.bucket, upload.key, upload.upload_id)
        while True:
            cur = await self.meta.get(ukey)
            if cur is None:
                await self.store.discard([part.extent])
                raise NoSuchUpload(upload.upload_id)
            old = await self.meta.get(pkey)
            ops = [Put(ukey, cur.value), Put(pkey, self._part_bytes(part)),
                   *self.store.commit_ops([part.extent])]
            if old is not None:
                ops += self.store.release_ops([self._part_from(old.value).extent])
            res = await self.meta.txn(
                [Compare(ukey, cur.mod_rev), Compare(pkey, old.mod_rev if old else 0)], ops)
            if res.succeeded:
                return

    @staticmethod
    def _part_bytes(part: Part) -> bytes:
        d = asdict(part)
        d["extent"] = part.extent.to_json()
        return json.dumps(d, separators=(",", ":")).encode()

    @staticmethod
    def _part_from(raw: bytes) -> Part:
        d = json.loads(raw)
        d["extent"] = Extent.from_json(d["extent"])
        return Part(**d)

    async def list_parts(self, upload: Upload, *, after: int = 0, limit: int = 10000) -> list[Part]:
        prefix = _pprefix(upload.bucket, upload.upload_id)
        kvs = await self.meta.scan(prefix + b"%05d" % (after + 1), prefix_end(prefix), limit=limit)
        return [self._part_from(kv.value) for kv in kvs]

    async def complete_upload(self, upload: Upload, chosen: list[Part], record: ObjectRecord
                              ) -> ObjectRecord:
        """Atomically turn the upload into ``record`` (whose extents are the chosen parts'),
        drop the upload and its part records, and queue unchosen parts for garbage collection.

        Raises NoSuchUpload if it was completed or aborted concurrently, PartChanged if one of
        ``chosen`` was replaced by a concurrent UploadPart after the caller listed it."""
        ukey = _ukey(upload.bucket, upload.key, upload.upload_id)
        while True:
            cur = await self.meta.get(ukey)
            if cur is None:
                raise NoSuchUpload(upload.upload_id)
            all_parts = {p.number: p for p in await self.list_parts(upload)}
            for p in chosen:
                if all_parts.get(p.number) != p:
                    raise PartChanged(p.number)
            chosen_nums = {p.number for p in chosen}
            ops = [Delete(ukey)]
            ops += [Delete(_pprefix(upload.bucket, upload.upload_id) + b"%05d" % n)
                    for n in all_parts]
            ops += self.store.release_ops(
                [p.extent for n, p in all_parts.items() if n not in chosen_nums])
            try:
                return await self.commit_object(
                    upload.bucket, record, consumed=[], extra_ops=ops,
                    extra_compare=[Compare(ukey, cur.mod_rev)])
            except ConflictError:
                continue  # a part arrived meanwhile: look again

    async def abort_upload(self, upload: Upload) -> None:
        """Drop the upload and queue its parts for garbage collection. Raises NoSuchUpload."""
        ukey = _ukey(upload.bucket, upload.key, upload.upload_id)
        while True:
            cur = await self.meta.get(ukey)
            if cur is None:
                raise NoSuchUpload(upload.upload_id)
            parts = await self.list_parts(upload)
            ops = [Delete(ukey)]
            ops += [Delete(_pprefix(upload.bucket, upload.upload_id) + b"%05d" % p.number)
                    for p in parts]
            ops += self.store.release_ops([p.extent for p in parts])
            if (await self.meta.txn([Compare(ukey, cur.mod_rev)], ops)).succeeded:
                return
