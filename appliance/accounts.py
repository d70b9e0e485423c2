"""Users (accounts) and their access keys, kept in the metadata store.

Each user is its own account: it owns the buckets it creates. Keys: ``a/user/<name>`` and
``a/key/<access key id>``. Secrets are stored as given, because SigV4 verification needs the
secret itself (AWS does the same: the signature is an HMAC keyed by it).
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
from dataclasses import asdict, dataclass

from .meta import Compare, Delete, MetaStore, Put

_USER_RE = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}$")  # IAM user name characters


class AccountError(Exception):
    pass


@dataclass
class User:
    name: str
    created: float


@dataclass
class AccessKey:
    access_key_id: str
    secret_access_key: str
    user: str
    created: float


def _ukey(name: str) -> bytes:
    return b"a/user/" + name.encode()


def _kkey(akid: str) -> bytes:
    return b"a/key/" + akid.encode()


def new_access_key_id() -> str:
    # AWS-like shape: 20 upper-case alphanumerics starting with AK.
    alphabet = string.ascii_uppercase + string.digits
    return "AK" + "".join(secrets.choice(alphabet) for _ in range(18))


def new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


class Accounts:
    def __init__(self, meta: MetaStore):
        self.meta = meta

    async def create_user(self, name: str) -> User:
        """Raises AccountError if the name is invalid or taken."""
        if not _USER_RE.match(name):
            raise AccountError(f"invalid user name {name!r}: 1-64 of A-Z a-z 0-9 _+=,.@-")
        user = User(name, time.time())
        res = await self.meta.txn([Compare(_ukey(name), 0)],
                                  [Put(_ukey(name), json.dumps(asdict(user)).encode())])
        if not res.succeeded:
            raise AccountError(f"user {name!r} already exists")
        return user

    async def get_user(self, name: str) -> User | None:
        kv = await self.meta.get(_ukey(name))
        return User(**json.loads(kv.value)) if kv else None

    async def list_users(self) -> list[User]:
        return [User(**json.loads(kv.value)) for kv in await self.meta.scan_prefix(b"a/user/")]

    async def delete_user(self, name: str) -> None:
        """Deletes the user and all its keys. Raises AccountError if it does not exist."""
        kv = await self.meta.get(_ukey(name))
        if kv is None:
            raise AccountError(f"no such user {name!r}")
        keys = [k for k in await self.list_keys(name)]
        await self.meta.txn([Compare(kv.key, kv.mod_rev)],
                            [Delete(kv.key), *(Delete(_kkey(k.access_key_id)) for k in keys)])

    async def create_key(self, user: str, access_key_id: str | None = None,
                         secret: str | None = None) -> AccessKey:
        ukv = await self.meta.get(_ukey(user))
        if ukv is None:
            raise AccountError(f"no such user {user!r}")
        key = AccessKey(access_key_id or new_access_key_id(), secret or new_secret(), user,
                        time.time())
        res = await self.meta.txn(
            [Compare(ukv.key, ukv.mod_rev), Compare(_kkey(key.access_key_id), 0)],
            [Put(_kkey(key.access_key_id), json.dumps(asdict(key)).encode())])
        if not res.succeeded:
            raise AccountError("user changed or access key id taken; try again")
        return key

    async def get_key(self, access_key_id: str) -> AccessKey | None:
        kv = await self.meta.get(_kkey(access_key_id))
        return AccessKey(**json.loads(kv.value)) if kv else None

    async def list_keys(self, user: str | None = None) -> list[AccessKey]:
        keys = [AccessKey(**json.loads(kv.value)) for kv in await self.meta.scan_prefix(b"a/key/")]
        return [k for k in keys if user is None or k.user == user]

    async def delete_key(self, access_key_id: str) -> None:
        if await self.meta.get(_kkey(access_key_id)) is None:
            raise AccountError(f"no such access key {access_key_id!r}")
        await self.meta.delete(_kkey(access_key_id))
