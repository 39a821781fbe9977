"""Large tensors on huge pages: a feature map is faulted in 2 MB at a time, not 4 KB.

PyTorch's CPU allocator takes every tensor from the C allocator, which maps a large one
afresh from the kernel and unmaps it on free: each layer's output is then faulted in page by
page, and the kernel zeroes each page before the layer may write it. One 512x512 pass of the
Compact network (64 channels, 33 MB a layer) took 313,000 page faults on 4 KB pages and
21,000 with PyTorch's transparent-huge-page allocation (THP_MEM_ALLOC_ENABLE, read once, when
PyTorch first allocates: set when `backend` is imported). Keeping freed memory
in glibc's heap instead was tried and dropped: PyTorch's 64-byte-aligned requests did not
reuse the freed blocks and the heap grew by a layer's size each time.

Linux only (the kernel's transparent huge pages in "madvise" or "always" mode); elsewhere the
variable means nothing. RESTORA_HUGE_PAGES=0 leaves it unset.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> bool:
    """Set PyTorch's variable unless the user set it or RESTORA_HUGE_PAGES=0; returns whether
    it is set. It takes effect if PyTorch has not allocated a tensor yet."""
    if os.environ.get("RESTORA_HUGE_PAGES", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    os.environ.setdefault(VARIABLE, "1")
    return os.environ[VARIABLE] == "1"
