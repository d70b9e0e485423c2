"""Erasure encoding straight through ISA-L (libisal2, via ctypes), producing the same fragments
as pyeclib's ``isa_l_rs_vand`` / ``isa_l_rs_cauchy`` backends, byte for byte.

Why: pyeclib holds the GIL for the whole encode and copies every byte into its fragments
(~0.35 ms per MiB on the event loop, the largest single cost of a PUT after MD5). ctypes
releases the GIL for each foreign call, so here the copies (memmove) and the encode
(ec_encode_data) run beside the event loop in a worker thread. pyeclib still decodes and
reconstructs: the fragments are identical, which :func:`IsalEncoder.self_check` verifies
against pyeclib before the encoder is used.

Fragment layout (liberasurecode erasurecode.h, fragment_header_t, 80 bytes little-endian):
idx u32, size u32, frag_backend_metadata_size u32, orig_data_size u64, chksum_type u8,
chksum u32[8], chksum_mismatch u8, backend_id u8, backend_version u32 (59 bytes of metadata),
then magic u32, libec_version u32, metadata_chksum u32 (zlib CRC-32 of the 59 bytes) and
9 bytes of padding; the payload follows. A segment of n bytes is zero-padded to K*ceil(n/K)
and split into K payloads of ceil(n/K) bytes (isa-l backends align to K, one-byte words).
"""

from __future__ import annotations

import ctypes
import struct
import zlib

from ..buffers import pinned, unfilled_bytearray

HEADER_LEN = 80
_META = struct.Struct("<IIIQB8IBBI")  # the 59 bytes of fragment_metadata_t
_TAIL = struct.Struct("<III")  # magic, libec_version, metadata_chksum
_MAGIC = 0xB0C5ECC
_HEADER_USED = _META.size + _TAIL.size
_HEADER_PAD = bytes(HEADER_LEN - _HEADER_USED)  # fragments are allocated unfilled


def header_fields(frag: bytes | memoryview) -> tuple[int, int, int, int] | None:
    """(idx, size, frag_backend_metadata_size, orig_data_size) from the fragment header at the
    start of ``frag``; None when there is no such header (too short, wrong magic)."""
    if len(frag) < HEADER_LEN or _TAIL.unpack_from(frag, _META.size)[0] != _MAGIC:
        return None
    return _META.unpack_from(frag, 0)[:4]


class IsalUnavailable(Exception):
    pass


def _load():
    try:
        lib = ctypes.CDLL("libisal.so.2")
    except OSError as e:
        raise IsalUnavailable(str(e)) from None
    u8p = ctypes.POINTER(ctypes.c_ubyte)
    for name, args in (("gf_gen_rs_matrix", [u8p, ctypes.c_int, ctypes.c_int]),
                       ("gf_gen_cauchy1_matrix", [u8p, ctypes.c_int, ctypes.c_int]),
                       ("ec_init_tables", [ctypes.c_int, ctypes.c_int, u8p, u8p]),
                       ("ec_encode_data", [ctypes.c_int, ctypes.c_int, ctypes.c_int, u8p,
                                           ctypes.POINTER(ctypes.c_void_p),
                                           ctypes.POINTER(ctypes.c_void_p)])):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


class IsalEncoder:
    """``encode(segment) -> K+M fragments`` (bytearrays) for ``k`` data and ``m`` parity
    fragments; ``cauchy`` selects the Cauchy matrix (pyeclib's isa_l_rs_cauchy) instead of
    Vandermonde (isa_l_rs_vand). ``template``: the header fields pyeclib writes that do not
    depend on the data (chksum_type, backend_id, backend_version, libec_version), taken from a
    pyeclib fragment. Raises IsalUnavailable."""

    def __init__(self, k: int, m: int, cauchy: bool, template: bytes):
        self.k, self.m = k, m
        self._lib = _load()
        n = k + m
        matrix = (ctypes.c_ubyte * (n * k))()
        gen = self._lib.gf_gen_cauchy1_matrix if cauchy else self._lib.gf_gen_rs_matrix
        gen(matrix, n, k)
        self._tables = (ctypes.c_ubyte * (32 * k * m))()
        parity_rows = ctypes.cast(ctypes.byref(matrix, k * k), ctypes.POINTER(ctypes.c_ubyte))
        self._lib.ec_init_tables(k, m, parity_rows, self._tables)
        fields = _META.unpack_from(template, 0)
        self._chksum_type, self._backend_id, self._backend_version = \
            fields[4], fields[14], fields[15]
        self._libec_version = _TAIL.unpack_from(template, _META.size)[1]

    def encode(self, parts) -> list[bytearray]:
        """The K+M fragments of one segment, given as the sequence of buffers (bytes,
        bytearray, memoryview) whose concatenation is the segment: they are copied straight
        into the data fragments, so a segment cut from several received pieces needs no join
        first. The copies and the encode run without the GIL."""
        k, m = self.k, self.m
        with pinned(parts) as spans:
            n = sum(length for _, length in spans)
            size = -(-n // k)  # ceil(n / k)
            frags = [unfilled_bytearray(HEADER_LEN + size) for _ in range(k + m)]
            with pinned(frags) as frag_spans:
                addrs = [addr + HEADER_LEN for addr, _ in frag_spans]
                at = 0  # offset in the segment
                for src, length in spans:
                    while length:
                        i, off = divmod(at, size)
                        count = min(length, size - off)
                        ctypes.memmove(addrs[i] + off, src, count)
                        src, length, at = src + count, length - count, at + count
                while at < k * size:  # zero padding up to K * size, as pyeclib pads
                    i, off = divmod(at, size)
                    ctypes.memset(addrs[i] + off, 0, size - off)
                    at += size - off
                if size:
                    data = (ctypes.c_void_p * k)(*addrs[:k])
                    parity = (ctypes.c_void_p * m)(*addrs[k:])
                    self._lib.ec_encode_data(size, k, m, self._tables, data, parity)
        for i, f in enumerate(frags):
            _META.pack_into(f, 0, i, size, 0, n, self._chksum_type, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                            self._backend_id, self._backend_version)
            _TAIL.pack_into(f, _META.size, _MAGIC, self._libec_version, zlib.crc32(f[:_META.size]))
            f[_HEADER_USED:HEADER_LEN] = _HEADER_PAD
        return frags

    def self_check(self, pyeclib_encode) -> bool:
        """True when our fragments equal pyeclib's for a set of awkward segment sizes."""
        pattern = bytes(range(251)) * 4200
        for n in (1, 2, self.k - 1, self.k + 1, 4097, 65535, 1 << 20):
            seg = pattern[:n]
            if [bytes(f) for f in self.encode([seg])] != [bytes(f) for f in pyeclib_encode(seg)]:
                return False
        return True
