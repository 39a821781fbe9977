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


def test_gpu_checks_run_each_command_on_both_devices_and_compare(tmp_path: Path) -> None:
    """bench/gpu_checks.py on a CPU against a CPU: the models are built in the users' folders,
    `restora <task> ... -d <device>` runs twice in one process, and the two images agree."""
    out = tmp_path / "checks.json"
    args = ["--device", "cpu", "--reference", "cpu", "--only", "upscale compact,denoise dncnn"]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_checks.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RESTORA_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["check"]: r for r in json.loads(out.read_text())["checks"]}
    assert set(rows) == {"upscale compact", "denoise dncnn"}
    for r in rows.values():
        assert r["ok"] and r["reference_ok"], r
        assert r["psnr_db"] == 999.0, r  # the same command on the same device: the same image
        assert " on cpu, " in r["said"], r  # the configuration line the command printed
    assert "0 of 2 checks failed on cpu" in done.stdout


def test_gpu_diffusion_benchmark_runs_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    """bench/gpu_diffusion.py with the tests' tiny SD 1.5 on a CPU: Restora's refine and
    diffusers' own img2img on the same diffusers folder, then tiled refine, each timed."""
    out = tmp_path / "diffusion.json"
    args = ["--device", "cpu", "--tiny", "--size", "64", "--tiled", "64", "--steps", "2"]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_diffusion.py"), *args, "--runs", "1",
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RESTORA_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"Restora refine", "diffusers img2img", "Restora tiled refine x2"}
    for what in ("Restora refine", "diffusers img2img"):
        # two sampler steps: one gap between them, timed
        assert 0 < rows[what]["step_seconds"] < rows[what]["seconds"], rows[what]
    assert rows["Restora tiled refine x2"]["seconds"] > 0
