"""Giving freed heap pages back to the system. Loading the networks and each job's
temporaries leave hundreds of MB free but resident in glibc's heap otherwise."""

from __future__ import annotations


def _glibc_trim():
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return lambda: None
    return lambda: trim(0)


release_heap = _glibc_trim()
