"""CRC-32C (Castagnoli, RFC 3720 §B.4), fast.

Debian's ``python3-crc32c`` 2.3 is built without its SSE4.2 path (``crc32c.hardware_based`` is
False): 2.2 GB/s, holding the GIL. ISA-L, which we already depend on for erasure coding
(libisal2), has ``crc32_iscsi`` using PCLMULQDQ: measured 47 GB/s on one core here, and a ctypes
call releases the GIL so shard threads checksum in parallel (for large inputs, see
:data:`GIL_RELEASE_MIN`). We use it when the library loads
and fall back to the ``crc32c`` module otherwise; both give the standard CRC-32C
(``crc32c(b"123456789") == 0xE3069283``).

ISA-L's function works on the raw register (no pre/post inversion), hence the ``^ 0xFFFFFFFF``
on the way in and out, which also makes chaining (``value=`` a previous result) standard.
"""

from __future__ import annotations

import ctypes

from .buffers import pinned

_MASK = 0xFFFFFFFF


def _load_isal(loader=ctypes.CDLL):
    try:
        fn = loader("libisal.so.2").crc32_iscsi
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return fn


_isal = _load_isal()
_isal_holding_gil = _load_isal(ctypes.PyDLL)
hardware_based = _isal is not None
GIL_RELEASE_MIN = 64 << 10
"""Inputs from this size up are checksummed with the GIL released. Below it (~1.4 us of
work) releasing costs more than it frees: with the event loop holding the GIL, getting it back
means a futex wait and a thread switch, tens of microseconds on our VMs."""


def _bytes_address(data: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


def _isal_crc(addr: int, n: int, value: int) -> int:
    crc = value ^ _MASK
    fn = _isal if n >= GIL_RELEASE_MIN else _isal_holding_gil
    while n > 0:
        step = min(n, 1 << 30)  # ISA-L takes an int length
        crc = fn(addr, step, crc)
        addr, n = addr + step, n - step
    return crc ^ _MASK


def crc32c(data, value: int = 0) -> int:
    """CRC-32C of ``data`` (any bytes-like object), continuing from ``value`` (the CRC of the
    data before it; 0 to start). Contiguous buffers are read in place."""
    if _isal is None:
        import crc32c as _module

        return _module.crc32c(data, value)
    if isinstance(data, bytes):
        return _isal_crc(_bytes_address(data), len(data), value)
    try:
        with pinned([data]) as [(addr, n)]:
            return _isal_crc(addr, n, value)
    except BufferError:  # not contiguous
        return crc32c(memoryview(data).tobytes(), value)


def crc32c_at(data, offset: int, length: int, value: int = 0) -> int:
    """CRC-32C of ``data[offset:offset+length]`` without copying the slice."""
    if offset < 0 or length < 0 or offset + length > len(data):
        raise ValueError("range outside the buffer")
    if _isal is None:
        return crc32c(memoryview(data)[offset:offset + length], value)
    if isinstance(data, bytes):
        return _isal_crc(_bytes_address(data) + offset, length, value)
    with pinned([data]) as [(addr, _)]:
        return _isal_crc(addr + offset, length, value)
