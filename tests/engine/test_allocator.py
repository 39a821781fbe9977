"""A layer's output costs a few page faults, not one per 4 KB: large tensors come on huge pages,
and a tile's layers reuse the heap blocks the previous tile freed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

#: imports the backend as the CLI and the server do, then allocates and fills a 64 MB tensor
#: twice (a layer's output, tile after tile) and counts the second round's page faults
PROBE = """
import json, os, resource, sys
sys.path.insert(0, {repo!r})
import backend
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def layer():
    t = torch.empty(16 * 1024 * 1024)  # 64 MB of float32
    t.fill_(1.0)
    return float(t[-1])
layer()
before = faults()
value = layer()
print(json.dumps({{"faults": faults() - before, "value": value,
                  "variable": os.environ.get("THP_MEM_ALLOC_ENABLE")}}))
"""

PAGES = 64 * 1024 * 1024 // 4096

#: a 9 MB layer (a 192x192 tile at 64 channels), allocated, filled and freed three times as
#: tile after tile would; counts the third round's page faults, then hands the heap back
REUSE_PROBE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
import backend
from backend.allocator import release_free_memory
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def layer():
    t = torch.empty(9 * 1024 * 1024 // 4)
    t.fill_(2.0)
    return float(t[-1])
layer(); layer()
before = faults()
value = layer()
third = faults() - before
held = rss()
release_free_memory()
print(json.dumps({{"faults": third, "value": value, "held": held, "released": rss()}}))
"""


def probe(code: str = PROBE, **env: str) -> dict:
    # PyTorch's variable only as this test sets it, never inherited from the shell
    inherited = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    result = subprocess.run(
        [sys.executable, "-c", code.format(repo=str(REPO))],
        capture_output=True,
        text=True,
        env={**inherited, **env},
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def huge_pages_possible() -> bool:
    return sys.platform.startswith("linux") and "[never]" not in (
        THP_MODE.read_text() if THP_MODE.exists() else "[never]"
    )


def test_importing_the_backend_puts_large_tensors_on_huge_pages() -> None:
    on, off = probe(), probe(RESTORA_HUGE_PAGES="0")
    print(f"page faults of a 64 MB layer: {on['faults']} on huge pages, {off['faults']} without")
    assert on["value"] == off["value"] == 1.0
    assert off["variable"] is None  # RESTORA_HUGE_PAGES=0: PyTorch's default, untouched
    assert off["faults"] > PAGES  # every 4 KB page of the fresh mapping, faulted in
    if sys.platform.startswith("linux"):
        assert on["variable"] == "1"
    if huge_pages_possible():
        assert on["faults"] < PAGES // 10


def test_a_tile_reuses_the_heap_blocks_the_last_tile_freed() -> None:
    pages = 9 * 1024 * 1024 // 4096
    reused = probe(REUSE_PROBE)
    # glibc's default moves its mmap threshold up to the size of a freed block, so whether a
    # block is reused there depends on what else was freed (2304 faults in some runs, 0 in
    # others): the baseline pins the threshold, so each 9 MB layer is a fresh mapping
    fresh = probe(REUSE_PROBE, RESTORA_HEAP_REUSE="0", RESTORA_HUGE_PAGES="0",
                  MALLOC_MMAP_THRESHOLD_="131072")  # fmt: skip
    print(
        f"page faults of a third 9 MB layer: {reused['faults']} reusing the heap, "
        f"{fresh['faults']} mapped afresh; resident {reused['held'] >> 20} MB while held, "
        f"{reused['released'] >> 20} MB after release"
    )
    assert reused["value"] == fresh["value"] == 2.0
    assert fresh["faults"] > pages * 0.9  # a fresh mapping: every 4 KB page faulted again
    if sys.platform.startswith("linux"):
        assert reused["faults"] < pages // 50
        # idle, the heap's free blocks go back to the kernel
        assert reused["held"] - reused["released"] > 8 * 1024 * 1024
