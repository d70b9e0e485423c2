"""Raw memory helpers for the byte paths: buffers allocated without zero-filling, and the
address of any contiguous buffer so ctypes can copy into or out of it without the GIL.

Both exist for speed on the PUT and GET paths (docs/architecture.md): a zero-fill is a pass
over every byte, and a copy made with a slice assignment holds the GIL while ctypes' memmove
does not.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_PyByteArray_FromStringAndSize = ctypes.pythonapi.PyByteArray_FromStringAndSize
_PyByteArray_FromStringAndSize.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
_PyByteArray_FromStringAndSize.restype = ctypes.py_object


def unfilled_bytearray(n: int) -> bytearray:
    """A new ``n``-byte bytearray whose bytes are not set: the C API's
    ``PyByteArray_FromStringAndSize(NULL, n)``. ``bytearray(n)`` zero-fills, which cost ~9% of
    a single-stream GET's event loop. Only for buffers that are wholly overwritten before
    anyone reads them."""
    return _PyByteArray_FromStringAndSize(None, n)


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (Include/pybuffer.h; unchanged since 3.3)."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_PyObject_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_PyObject_GetBuffer.restype = ctypes.c_int
_PyBuffer_Release = ctypes.pythonapi.PyBuffer_Release
_PyBuffer_Release.argtypes = [ctypes.POINTER(_PyBuffer)]
_PyBuffer_Release.restype = None
_PyBUF_SIMPLE = 0  # contiguous bytes, read-only allowed


@contextlib.contextmanager
def pinned(objs) -> Iterator[list[tuple[int, int]]]:
    """(address, length) of each buffer in ``objs`` (bytes, bytearray, memoryview, mmap...),
    valid until the block ends: each buffer is held with ``PyObject_GetBuffer`` meanwhile, so
    a bytearray cannot be resized under it. Raises BufferError for non-contiguous buffers."""
    views: list[_PyBuffer] = []
    try:
        for obj in objs:
            view = _PyBuffer()
            _PyObject_GetBuffer(obj, ctypes.byref(view), _PyBUF_SIMPLE)  # raises on failure
            views.append(view)
        yield [(v.buf or 0, v.len) for v in views]
    finally:
        for view in views:
            _PyBuffer_Release(ctypes.byref(view))
