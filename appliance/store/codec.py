"""Pools and their codecs: ``ec:K+M`` (pyeclib over ISA-L) and ``replicated:N``.

A codec turns one segment (up to ``segment_size`` bytes) into ``width`` fragments, any
``k`` of which rebuild it. pyeclib does not detect corruption (a flipped byte decodes to wrong
data, DESIGN.md §4), so callers verify every fragment's crc32c before ``decode``.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

from .isal import HEADER_LEN, IsalEncoder, IsalUnavailable, header_fields

log = logging.getLogger(__name__)

_POOL_RE = re.compile(r"^(?:ec:(\d+)\+(\d+)|replicated:(\d+))$")


class PoolSpecError(ValueError):
    pass


@dataclass(frozen=True)
class PoolSpec:
    """A protection policy. ``k`` fragments rebuild a segment; ``m`` more are redundancy."""

    k: int
    m: int
    replicated: bool = False

    @property
    def width(self) -> int:
        return self.k + self.m

    @property
    def name(self) -> str:
        return f"replicated:{self.width}" if self.replicated else f"ec:{self.k}+{self.m}"

    @property
    def write_quorum(self) -> int:
        """Shards that must be durable before a write is acknowledged: K+1, so that an
        acknowledged write survives one more failure (DESIGN.md §4); all of them when M=0."""
        return min(self.k + 1, self.width)

    def read_by_default(self, index: int) -> bool:
        """Whether a healthy read uses shard ``index``: the K data shards (the first replica).
        The others are read only when one of these is lost or slow."""
        return index < self.k

    @classmethod
    def parse(cls, text: str) -> PoolSpec:
        """``"ec:4+2"`` or ``"replicated:3"``. Raises PoolSpecError."""
        m = _POOL_RE.match(text.strip())
        if not m:
            raise PoolSpecError(f"pool must be 'ec:K+M' or 'replicated:N', not {text!r}")
        if m.group(3):
            n = int(m.group(3))
            if not 1 <= n <= 16:
                raise PoolSpecError("replicated:N needs 1 <= N <= 16")
            return cls(1, n - 1, replicated=True)
        k, mm = int(m.group(1)), int(m.group(2))
        if not (2 <= k and 1 <= mm and k + mm <= 32):
            raise PoolSpecError("ec:K+M needs K >= 2, M >= 1, K+M <= 32")
        return cls(k, mm)


class Codec:
    """Encode/decode segments for one pool. ``fragment_size(n)`` is exact for an n-byte segment."""

    def __init__(self, spec: PoolSpec):
        self.spec = spec
        if spec.replicated:
            self._driver = None
        else:
            from pyeclib.ec_iface import ECDriver

            # Vandermonde RS is only guaranteed MDS for M <= 4; Cauchy beyond (DESIGN.md §4).
            ec_type = "isa_l_rs_vand" if spec.m <= 4 else "isa_l_rs_cauchy"
            self._driver = ECDriver(k=spec.k, m=spec.m, ec_type=ec_type)
        self._encoder = self._isal_encoder(spec)

    def _isal_encoder(self, spec: PoolSpec):
        """Our GIL-free ISA-L encoder when it provably writes pyeclib's fragments; else None."""
        if self._driver is None:
            return None
        try:
            enc = IsalEncoder(spec.k, spec.m, spec.m > 4, self._driver.encode(b"x")[0])
        except IsalUnavailable as e:
            log.warning("ISA-L encoder unavailable (%s); encoding with pyeclib", e)
            return None
        if not enc.self_check(self._driver.encode):
            log.warning("ISA-L encoder output differs from pyeclib's; encoding with pyeclib")
            return None
        return enc

    @functools.lru_cache(maxsize=64)
    def fragment_size(self, segment_len: int) -> int:
        if self._driver is None:
            return segment_len
        return self._driver.get_segment_info(segment_len, segment_len)["fragment_size"]

    def encode(self, segment) -> list[bytes | bytearray]:
        """K+M fragments of ``segment``: one buffer, or a sequence of buffers whose
        concatenation is the segment (see :meth:`IsalEncoder.encode`). Releases the GIL for
        the byte work when the ISA-L encoder is in use, so call it from a worker thread for
        large segments."""
        parts = [segment] if isinstance(segment, (bytes, bytearray, memoryview)) else segment
        if self._encoder is not None:
            return self._encoder.encode(parts)
        joined = b"".join(parts)
        if self._driver is None:
            return [joined] * self.spec.width
        return self._driver.encode(joined)

    def decode(self, fragments: dict[int, bytes | memoryview]) -> bytes:
        """Rebuild a segment from at least ``k`` verified fragments keyed by shard index."""
        if self._driver is None:
            return bytes(next(iter(fragments.values())))
        if all(i in fragments for i in range(self.spec.k)):
            joined = self._join_data([fragments[i] for i in range(self.spec.k)])
            if joined is not None:
                return joined
        return self._driver.decode([bytes(fragments[i])
                                    for i in sorted(fragments)[: self.spec.k]])

    def _join_data(self, data: list[bytes | memoryview]) -> bytes | None:
        """The segment from its K data fragments without a decode call: the systematic codes we
        use store the segment itself, split in K payloads (liberasurecode's fragments_to_string
        does the same). None when a header does not look as expected; then pyeclib decides."""
        views = []
        orig = None
        for want, frag in enumerate(data):
            got = _data_header(frag, want)
            if got is None or len(frag) != HEADER_LEN + got[0] \
                    or (orig is not None and got[1] != orig):
                return None
            orig = got[1]
            views.append(memoryview(frag)[HEADER_LEN:])
        if orig is None or orig > sum(len(v) for v in views):
            return None
        left = orig
        for n, v in enumerate(views):  # payloads are padded: keep the first ``orig`` bytes
            views[n] = v[:left]
            left -= len(views[n])
        return b"".join(views)

    def data_layout(self, segment_len: int) -> tuple[int, list[tuple[int, int]]] | None:
        """Where an ``segment_len``-byte segment lies in its K data fragments, so that a reader
        can put each fragment's share straight into place: (header bytes at the start of every
        fragment, [(start, end) of the segment held by data fragment i, i < K]). The systematic
        codes we use split the segment into K payloads of ``ceil(segment_len / K)`` bytes, the
        last padded (liberasurecode's fragments_to_string joins them the same way); a share is
        empty when the segment ends before it. None for pools without such a layout
        (replicated). :meth:`data_headers_match` checks the fragments actually read."""
        if self._driver is None:
            return None
        p = self.fragment_size(segment_len) - HEADER_LEN
        return HEADER_LEN, [(min(i * p, segment_len), min((i + 1) * p, segment_len))
                                  for i in range(self.spec.k)]

    def data_headers_match(self, heads: list[bytes], segment_len: int) -> bool:
        """Whether ``heads[i]``, the header of data fragment i (i < K), describes the layout
        :meth:`data_layout` gave for this segment; if not, decode the fragments instead."""
        p = self.fragment_size(segment_len) - HEADER_LEN
        return len(heads) == self.spec.k and all(
            _data_header(h, i) == (p, segment_len) for i, h in enumerate(heads))

    def reconstruct(self, fragments: dict[int, bytes], missing: list[int]) -> dict[int, bytes]:
        """Fragments for the ``missing`` indices from at least ``k`` others (repair)."""
        if self._driver is None:
            src = bytes(next(iter(fragments.values())))
            return {i: src for i in missing}
        avail = [bytes(fragments[i]) for i in sorted(fragments)]
        return dict(zip(missing, (self._driver.reconstruct(avail, [i])[0] for i in missing)))


def _data_header(frag: bytes | memoryview, index: int) -> tuple[int, int] | None:
    """(payload bytes, segment bytes) from the liberasurecode header at the start of
    ``frag``, if it is a plain header of data fragment ``index``; else None."""
    fields = header_fields(frag)
    if fields is None:
        return None
    idx, size, backend_meta, total = fields
    if idx != index or backend_meta:
        return None
    return size, total


@functools.lru_cache(maxsize=16)
def codec_for(pool: str) -> Codec:
    return Codec(PoolSpec.parse(pool))
