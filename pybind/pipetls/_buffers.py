"""Zero-copy access to Python buffers for ctypes calls: :class:`pinned_buffer`."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_char_p, c_int, c_void_p
from typing import Optional

__all__ = ["pinned_buffer"]


# --------------------------------------------------------------------------
# Zero-copy access to Python buffers (bytes, bytearray, memoryview, array,
# mmap ...).  PyObject_GetBuffer pins the memory (a bytearray cannot resize
# while exported) for the duration of the C call; nothing is copied.
# --------------------------------------------------------------------------
class Py_buffer(ctypes.Structure):
    _fields_ = [
        ("buf", c_void_p),
        ("obj", c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", c_int),
        ("ndim", c_int),
        ("format", c_char_p),
        ("shape", c_void_p),
        ("strides", c_void_p),
        ("suboffsets", c_void_p),
        ("internal", c_void_p),
    ]


_PyObject_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_PyObject_GetBuffer.argtypes = [ctypes.py_object, POINTER(Py_buffer), c_int]
_PyObject_GetBuffer.restype = c_int
_PyBuffer_Release = ctypes.pythonapi.PyBuffer_Release
_PyBuffer_Release.argtypes = [POINTER(Py_buffer)]
_PyBuffer_Release.restype = None
_PyBUF_SIMPLE = 0
_PyBUF_WRITABLE = 1


class pinned_buffer:
    """``with pinned_buffer(obj, writable) as (address, length):``

    Exposes the memory of any C-contiguous buffer object without copying.
    Raises TypeError for objects without the buffer protocol, for
    non-contiguous views, and (writable=True) for read-only buffers.
    """

    __slots__ = ("_obj", "_flags", "_view")

    def __init__(self, obj: object, writable: bool = False) -> None:
        self._obj = obj
        self._flags = _PyBUF_WRITABLE if writable else _PyBUF_SIMPLE
        self._view: Optional[Py_buffer] = None

    def __enter__(self) -> tuple[int, int]:
        view = Py_buffer()
        try:
            _PyObject_GetBuffer(self._obj, ctypes.byref(view), self._flags)
        except (BufferError, TypeError) as e:
            raise TypeError(
                "expected a contiguous%s bytes-like object, got %s (%s)"
                % (" writable" if self._flags else "", type(self._obj).__name__, e)
            ) from None
        self._view = view
        return view.buf or 0, view.len

    def __exit__(self, *exc: object) -> None:
        if self._view is not None:
            _PyBuffer_Release(ctypes.byref(self._view))
            self._view = None
