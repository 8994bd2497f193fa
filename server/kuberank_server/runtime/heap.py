"""Keeps the heap cheap while serving: start-up's objects out of the garbage collector's
walks, and freed memory handed back to the OS after large requests.

glibc keeps what a request freed (a multi-megabyte body decoded into Python strings, the
tokenizer's buffers in its threads' arenas) for reuse, so without this RSS stays at the
high-water mark of the largest request seen. `malloc_trim(0)` releases the free pages of every
arena. It takes milliseconds, so it runs only after a large request, in a thread, one at a time.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

# Bodies at least this large leave enough freed memory behind to be worth a trim.
LARGE_BODY_BYTES = 1024 * 1024


def freeze_startup_heap() -> None:
    """Takes every object alive at the end of start-up (modules, the engine client, the
    tokenizer: about a million) out of the collector's reach. Requests allocate enough for a
    full collection every few seconds under load, and each one walked them all: a second or
    more of a busy 2-core machine with the event loop stopped (issue 20's profile). After
    this a collection walks only what serving allocated. Cheap: no collection runs here, so
    what start-up left as cyclic garbage is kept, not freed; it is small and made once."""
    gc.freeze()


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _malloc_trim()
_pending: set[asyncio.Task[None]] = set()


def trim_soon() -> None:
    """Release freed heap pages in the background, unless a release is already under way."""
    if _MALLOC_TRIM is None or _pending:
        return
    task = asyncio.get_running_loop().create_task(asyncio.to_thread(_MALLOC_TRIM, 0))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
