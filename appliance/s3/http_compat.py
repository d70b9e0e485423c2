"""Reason phrases on HTTP/1.1 status lines, for clients that need them.

h11 (under hypercorn) writes status lines as ``HTTP/1.1 100 `` with no reason phrase. RFC 9112
§4 makes the phrase optional, but the botocore bundled with aws-cli 2.9 and botocore < 1.36
reject ``100`` without ``Continue`` (their Expect: 100-continue handling parses the interim
line themselves) and fail every upload. There is no hypercorn setting for it, so we wrap h11's
response writer once, filling in the standard phrase from :class:`http.HTTPStatus` when the
response has none. A no-op when h11 already writes one.
"""

from __future__ import annotations

import http

import h11._writers as _writers

_installed = False


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def install_reason_phrases() -> None:
    """Make every h11 response carry its standard reason phrase (idempotent)."""
    global _installed
    if _installed:
        return
    original = _writers.write_any_response

    def write_any_response(response, write):
        if not response.reason:
            # h11 events are frozen dataclass-likes; this is how h11 itself sets fields.
            object.__setattr__(response, "reason", _phrase(response.status_code))
        return original(response, write)

    for key, writer in list(_writers.WRITERS.items()):
        if writer is original:
            _writers.WRITERS[key] = write_any_response
    _installed = True
