"""XML in and out: responses built with xml.etree, untrusted request bodies parsed with defusedxml.

Also the two date formats S3 uses: ISO 8601 with milliseconds in XML bodies
(``2009-10-12T17:50:30.000Z``) and RFC 7231 IMF-fixdate in headers
(``Mon, 12 Oct 2009 17:50:30 GMT``).
"""

from __future__ import annotations

import calendar
import time
import xml.etree.ElementTree as ET
from email.utils import formatdate, parsedate_to_datetime

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from .errors import S3Error

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BODY = 1 << 20
"""Largest XML request body accepted (DeleteObjects with 1000 long keys is ~1.1 MB max;
AWS's own limit for most configuration bodies is far below)."""


def E(tag: str, *children, **attrs: str) -> ET.Element:
    """Build an element: ``E("Owner", E("ID", "u1"), E("DisplayName", "u1"))``.

    A str/int child becomes the text; Element children are appended; lists are flattened;
    None is skipped (so optional fields can be written inline)."""
    el = ET.Element(tag, attrs)
    _add(el, children)
    return el


def _add(el: ET.Element, children) -> None:
    for c in children:
        if c is None:
            continue
        if isinstance(c, ET.Element):
            el.append(c)
        elif isinstance(c, (list, tuple)):
            _add(el, c)
        elif isinstance(c, bool):
            el.text = "true" if c else "false"
        else:
            el.text = str(c)


def to_bytes(root: ET.Element, *, namespace: bool = True) -> bytes:
    """Serialise with the XML declaration; the root gets the S3 namespace unless told not to."""
    if namespace and "xmlns" not in root.attrib:
        root.set("xmlns", S3_NS)
    return XML_DECL + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def parse(body: bytes, root: str) -> ET.Element:
    """Parse an untrusted request body whose root element must be ``root``.

    Namespaces are stripped from every tag (clients send the S3 namespace or none).
    Raises S3Error MalformedXML on syntax errors, entities/DTDs (defusedxml), a wrong root or an
    empty body."""
    if not body.strip():
        raise S3Error("MalformedXML")
    try:
        tree = DET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as e:
        raise S3Error("MalformedXML", details=str(e)[:200]) from None
    for el in tree.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    if tree.tag != root:
        raise S3Error("MalformedXML")
    return tree


def child_text(el: ET.Element, tag: str, default: str | None = None) -> str | None:
    """Text of the first direct child ``tag`` ('' when present but empty), else ``default``."""
    c = el.find(tag)
    if c is None:
        return default
    return c.text or ""


def iso8601(ts: float) -> str:
    """``2009-10-12T17:50:30.000Z`` (UTC, milliseconds), as S3 writes LastModified in XML."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def http_date(ts: float) -> str:
    """RFC 7231 IMF-fixdate, e.g. ``Mon, 12 Oct 2009 17:50:30 GMT`` (whole seconds)."""
    return formatdate(int(ts), usegmt=True)


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch of an HTTP date (RFC 7231 and the obsolete forms), or None."""
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return float(calendar.timegm(dt.utctimetuple()))
