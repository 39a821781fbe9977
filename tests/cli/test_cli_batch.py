"""`restora upscale` on batches, run as a subprocess: inputs and outputs checked before a model
loads, a write that fails (disk full, read-only folder) reported clearly with the rest of the
batch still done, JPEG output flattened with a warning, progress at a steady pace in a log."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.cli import ProgressBar
from tests.cli_runner import CLI
from tests.images import png_header_only
from tests.model_zoo import save_tiny


def restora(*args: str | Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        preexec_fn=preexec,
    )


def noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def file_size_limit(limit: int):
    """For the child: writes past `limit` bytes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_mid_batch_is_reported_and_the_rest_is_done(
    models_root: Path, tmp_path: Path
) -> None:
    save_tiny("compact", models_root)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noise(96, 96, seed=1)).save(src / "a-big.png")  # 384x384 of noise: ~440 kB
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "b-small.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "c-small.png")
    out = tmp_path / "out"
    result = restora(
        "upscale", src, "-o", out, "-m", "tiny-compact", preexec=file_size_limit(20_000)
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"restora: error: {src / 'a-big.png'}: Cannot write {out / 'a-big.png'}" in (
        result.stderr
    )
    assert "File too large" in result.stderr and "hint: Free some disk space" in result.stderr
    assert "1 of 3 images failed." in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b-small.png", "c-small.png"]  # no .part


def read_only_folder(path: Path) -> None:
    """A folder no write goes into, for root too: a read-only tmpfs (chmod does not stop root)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.fail("root, but cannot mount a read-only tmpfs for the test")


def test_read_only_output_fails_before_the_model_loads(models_root: Path, tmp_path: Path) -> None:
    save_tiny("compact", models_root)
    src = tmp_path / "a.png"
    Image.fromarray(noise(16, 16)).save(src)
    out = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    read_only_folder(out)
    try:
        result = restora("upscale", src, "-o", out / "a.png", "-m", "tiny-compact")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)], check=True)
    assert result.returncode == 2, result.stderr
    assert "Cannot write" in result.stderr and "Traceback" not in result.stderr
    assert "1 of 1 images failed." in result.stderr
    assert "loading" not in result.stderr  # refused before PyTorch and the model


def test_corrupt_input_is_refused_before_the_model_and_the_batch_goes_on(
    models_root: Path, tmp_path: Path
) -> None:
    save_tiny("compact", models_root)
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.png").write_bytes(png_header_only(64, 64)[:40] + b"\xff" * 50)
    Image.fromarray(noise(12, 12)).save(src / "good.png")
    result = restora("upscale", src, "-o", tmp_path / "out", "-m", "tiny-compact")
    assert result.returncode == 2 and "1 of 2 images failed." in result.stderr
    err = result.stderr
    # the corrupt file is named before any model work starts; then the good one is done
    assert err.index("bad.png") < err.index("loading PyTorch") < err.index("loading tiny-compact")
    assert "checking 2 inputs" in err and "model tiny-compact" in err
    assert (tmp_path / "out" / "good.png").is_file()
    alone = restora("upscale", src / "bad.png", "-o", tmp_path / "x.png", "-m", "tiny-compact")
    assert alone.returncode == 2 and "loading" not in alone.stderr  # nothing was loaded


def test_jpeg_output_flattens_alpha_on_white_with_a_warning(
    models_root: Path, tmp_path: Path
) -> None:
    save_tiny("compact", models_root)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but hidden: fully transparent on the left half
    rgba[:, 8:, 3] = 255
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)
    out = tmp_path / "a.jpg"
    result = restora("upscale", src, "-o", out, "-m", "tiny-compact", "--alpha", "resize")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "transparent pixels are shown on white" in result.stderr
    jpg = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert jpg[:, :16].min() > 240  # white, not the red under the transparent pixels
    small = tmp_path / "q.jpg"
    low = restora("upscale", src, "-o", small, "-m", "tiny-compact", "--quality", "10")
    assert low.returncode == 0 and small.stat().st_size < out.stat().st_size
    assert restora("upscale", src, "-o", small, "--quality", "0").returncode == 2


def test_progress_in_a_log_is_printed_at_a_steady_interval(capsys) -> None:
    now = [100.0]
    bar = ProgressBar("photo.png", True, interval=5.0, clock=lambda: now[0])
    bar.tty = False
    for step in range(61):  # one step a second, 1% each (a slow photo)
        bar(step / 100, "tiles")
        now[0] += 1.0
    bar(1.0, "done")
    lines = capsys.readouterr().err.splitlines()
    # the start, then every 5 s (13 lines for 60 s), then the end
    assert len(lines) == 14, lines
    assert "  0.0%" in lines[0] and " 60.0%" in lines[12] and "100.0%" in lines[-1]
