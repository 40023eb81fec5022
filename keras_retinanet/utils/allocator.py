"""Keep freed memory in the process instead of handing it back to the system after each step.

TensorFlow's CPU kernels allocate their output buffers with ``malloc``. With glibc's
defaults, every buffer over the mmap threshold (at most 32 MiB, so every large activation
of a training step) is a fresh ``mmap`` that is returned with ``munmap`` when freed, and
the next step faults every page of it in again: on 400-px training batches about 40% of
the CPU time went to the kernel's page-fault handling. ``keep_freed_memory`` tells glibc
never to serve allocations by ``mmap`` and never to trim its heap, so freed buffers are
reused as they are -- what tcmalloc or jemalloc do by themselves. The peak memory stays
the same (it is the peak of live buffers either way); memory freed after the peak is kept
for reuse instead of being returned.

The tools call it before TensorFlow starts; call it yourself at the top of a training
script. ``KERAS_RETINANET_MALLOC=system`` keeps glibc's defaults (``keep`` or unset: the
setting above; any other value raises ``errors.SettingError``); it does nothing on a C
library other than glibc, or when another allocator was preloaded (``LD_PRELOAD``).
"""
import ctypes
import ctypes.util
import os
import platform

from .environment import read_setting

# mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# the largest value mallopt takes for the trim threshold (an int): the heap is never trimmed
_NEVER = 2**31 - 1

ENVIRONMENT_VARIABLE = "KERAS_RETINANET_MALLOC"
SETTINGS = {"system": "glibc's defaults", "keep": "keep freed memory for reuse"}

_applied = None


def setting(environ=None):
    """The value of ``KERAS_RETINANET_MALLOC``: 'keep' (also when unset or empty) or 'system'.

    Raises:
        SettingError: any other value.
    """
    return read_setting(ENVIRONMENT_VARIABLE, SETTINGS, "keep", environ)


def keep_freed_memory():
    """Make glibc keep and reuse freed memory (see the module docstring).

    Returns:
        True when glibc's settings were changed (now or by an earlier call), False when
        nothing was done: not glibc, another allocator preloaded, or the environment
        variable set to ``system``.

    Raises:
        SettingError: ``KERAS_RETINANET_MALLOC`` has an unknown value (``setting``).
    """
    global _applied
    if _applied is not None:
        return _applied
    choice = setting()  # a bad value raises before anything is decided
    _applied = False
    if choice == "system":
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # tcmalloc, jemalloc, mimalloc: already fine
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
    return _applied
