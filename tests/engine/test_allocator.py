"""Large tensors come on huge pages: a layer's output costs a few page faults, not one per 4 KB."""

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


def probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(repo=str(REPO))],
        capture_output=True,
        text=True,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "THP_MEM_ALLOC_ENABLE"},
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
