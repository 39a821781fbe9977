"""Feature maps in memory that is already mapped: a layer's output costs no page faults.

PyTorch's CPU allocator takes every tensor from the C allocator. glibc maps a request above
its mmap threshold (128 KB at first; it rises on its own to the size of a freed mapping, so
whether a size is reused depends on what was freed before) afresh from the kernel and unmaps
it on free, so each layer's output, tile after tile, is faulted in page by page, and the
kernel zeroes each page before the layer may write it. Two changes, both made when `backend`
is imported, before PyTorch allocates:

- Huge pages (PyTorch's THP_MEM_ALLOC_ENABLE): a request of 2 MB and up is 2 MB aligned and
  advised for transparent huge pages, so a fresh mapping is faulted 2 MB at a time. One
  512x512 pass of the Compact network (64 channels, 33 MB a layer) took 313,000 page faults
  on 4 KB pages and 21,000 with it.
- Heap reuse (glibc's mallopt): requests up to 16 MB come from one heap that every thread
  shares, and a freed block stays there for the next tile's layer of the same size instead of
  going back to the kernel. On a VM here a fresh 9.4 MB huge-page mapping took 5-9 ms to
  fault and fill, the reused block 0.25 ms; the face detector per megapixel went from
  1.2-2.5x LiteRT's time to 1.0-2.0x. The heap keeps what it holds while jobs run;
  `release_free_memory` hands it back when the server goes idle or a model is unloaded, so
  the process's memory falls back between jobs as before.

Linux with glibc only; elsewhere both are no-ops. RESTORA_HUGE_PAGES=0 leaves PyTorch's
variable unset, RESTORA_HEAP_REUSE=0 leaves glibc's thresholds at their defaults.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from functools import cache

log = logging.getLogger(__name__)

VARIABLE = "THP_MEM_ALLOC_ENABLE"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: requests up to this come from the heap: a 256 px tile's bf16 layer (8 MB), the face
#: detector's batched windows (9.4 MB); larger ones, a large image's strips and results, are
#: mapped afresh and handed back on free, as before (at glibc's ceiling, 32 MB, the 4096 px
#: upscale through the server peaked 200-400 MB higher)
HEAP_LIMIT = 16 * 1024 * 1024
#: free memory at the heap's top beyond this goes back to the kernel at once; below it, it
#: waits for the next tile (a tile's whole set of live layers fits in it)
TRIM_THRESHOLD = 64 * 1024 * 1024


def use_huge_pages() -> bool:
    """Set PyTorch's variable unless the user set it or RESTORA_HUGE_PAGES=0; returns whether
    it is set. It takes effect if PyTorch has not allocated a tensor yet."""
    if os.environ.get("RESTORA_HUGE_PAGES", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    os.environ.setdefault(VARIABLE, "1")
    return os.environ[VARIABLE] == "1"


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # musl and other C libraries have neither
        return None
    return libc


def keep_heap_blocks() -> bool:
    """Serve requests up to HEAP_LIMIT from the heap and keep what is freed there; returns
    whether glibc took both settings (RESTORA_HEAP_REUSE=0: leave them alone)."""
    libc = _glibc()
    if libc is None or os.environ.get("RESTORA_HEAP_REUSE", "1") == "0":
        return False
    # setting either also stops glibc moving the mmap threshold on its own
    took = libc.mallopt(_M_MMAP_THRESHOLD, HEAP_LIMIT) == 1
    took = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and took
    # one heap for every thread: the server's worker thread otherwise gets an arena of its own
    # made of 64 MB heaps, where freed blocks of this size stay stranded (measured: the server's
    # large-upscale peak 1.70x the result with 8 arenas, 1.36x with one)
    took = libc.mallopt(_M_ARENA_MAX, 1) == 1 and took
    if not took:
        log.debug("glibc refused the heap thresholds; freed tensors go back to the kernel")
    return took


def release_free_memory() -> None:
    """Give the heap's free blocks back to the kernel (every arena, not only the top), so an
    idle process holds what it uses and no more."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
