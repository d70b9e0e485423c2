"""Authentication: find the caller's secret key, then let sigv4 verify the signature.

The key lookup is asynchronous (it reads the metadata store) while
:func:`appliance.s3.sigv4.verify_request` is synchronous, so the access key id is taken from the
``Authorization`` header or the ``X-Amz-Credential`` query parameter first, looked up, and the
verifier is then given a one-entry mapping. Anything malformed is left to the verifier, which
answers with the AWS error (AccessDenied for anonymous requests, AuthorizationHeaderMalformed,
SignatureDoesNotMatch, RequestTimeTooSkewed, ...).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ..accounts import Accounts
from .request import S3Request
from .sigv4 import AuthResult, SignedRequest, verify_request

_HEADER_AKID = re.compile(r"Credential=\s*([^/,\s]+)/")


def access_key_id(req: S3Request) -> str | None:
    """The access key id a request claims, or None when it carries no credential."""
    authz = req.headers.get("authorization")
    if authz is not None:
        m = _HEADER_AKID.search(authz)
        return m.group(1) if m else None
    cred = req.query.get("X-Amz-Credential")
    if cred:
        return cred.split("/", 1)[0]
    return None


async def authenticate(req: S3Request, accounts: Accounts) -> tuple[AuthResult, str]:
    """Verify ``req``; returns (auth result, user name). Raises sigv4.S3AuthError.

    Any region in the credential scope is accepted (clients such as rclone and s3cmd sign with
    whatever region they were configured with); the signature is still checked against it."""
    akid = access_key_id(req)
    secrets: dict[str, str] = {}
    user = ""
    if akid:
        key = await accounts.get_key(akid)
        if key is not None:
            secrets[akid] = key.secret_access_key
            user = key.user
    result = verify_request(SignedRequest.from_asgi(req.scope), secrets,
                            now=datetime.now(timezone.utc))
    return result, user
