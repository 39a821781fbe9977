"""The GPU benchmark is run rarely, on a machine lent for minutes: it must not fail there for
a reason a CPU run shows. This runs its whole script (the networks saved and loaded through the
registry, the chaiNNer-style loop, Restora's rows, the JSON) on the CPU at a tiny size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_runs_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = ["--device", "cpu", "--size", "40", "--chainner-tile", "16", "--precision", "fp32"]
    args += ["--models", "compact", "--runs", "1", "--out", str(out)]
    env_home = {"RESTORA_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_upscale.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env_home},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())
    rows = {r["config"]: r for r in found["rows"]}
    assert set(rows) == {
        "chaiNNer-style (16 px tiles)",
        "Restora, automatic",
        "Restora, channels-last",
    }
    base = rows["chaiNNer-style (16 px tiles)"]
    assert base["speedup"] == 1.0
    # 16 px tiles with a 16 px overlap of a real-size Compact net: the loop agrees with one
    # fp32 pass to well above visible differences, and Restora's fp32 is that pass
    assert 35 < base["psnr_db"] < math.inf
    assert rows["Restora, automatic"]["psnr_db"] > 60
    for r in found["rows"]:
        assert r["seconds"] > 0 and r["mp_per_s"] > 0
    # compact's real size: 32 convolutions of 64 channels, about 2.4 MFLOP per input pixel
    assert "2.4 MFLOP per input pixel" in done.stdout
