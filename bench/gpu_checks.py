#!/usr/bin/env python3
"""Every task's GPU path once, as a user runs it: `restora <task> ... -d cuda`, then the same
command with `-d cpu`, on models with random weights saved in the users' folder layouts.

    python bench/gpu_checks.py [--device cuda] [--reference cpu] [--only upscale,faces,...]
        [--out FILE.json]

Nothing in the test suite runs on a GPU (none is at hand where it runs), so this is where the
CUDA paths are tried: each super-resolution and restoration family, the three face models at
their real sizes, colorization and inpainting, SD 1.5 img2img and its tiled upscale, HYPIR on
SD 2.1, and Qwen-Image-Edit. Per check: whether the command succeeded on each device, its
seconds (the command's own call, in this process, after the libraries are loaded), the
configuration it printed, and the PSNR between the two devices' images (fp16 on the GPU
against the CPU's choice; the diffusion tasks draw their noise on the CPU from the seed, so
their results are comparable too). A failing check prints the end of what the command said
and the run goes on; the exit status is the number of checks that failed on the device.

`--device cpu --reference cpu --only upscale` runs it on a CPU, to check the script.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_common import psnr  # noqa: E402


@dataclass
class Check:
    group: str  # the --only name
    label: str
    command: list[str]  # after `restora`, before the input; {input}/{mask} are filled in
    build: Callable[[Path], object]  # saves the model(s) under the models root
    source: str = "photo"  # photo, face, gray


def _tiny(key: str, name: str) -> Callable[[Path], object]:
    def build(root: Path) -> object:
        from tests.model_zoo import save_tiny

        return save_tiny(key, root, file_name=name)

    return build


def _zoo(module: str, function: str) -> Callable[[Path], object]:
    def build(root: Path) -> object:
        import importlib

        return getattr(importlib.import_module(f"tests.{module}"), function)(root)

    return build


def checks() -> list[Check]:
    sr = ["compact", "esrgan", "swinir", "span", "realcugan", "omnisr", "plksr", "safmn", "rcan"]
    found = [
        Check("upscale", f"upscale {k}", ["upscale", "-m", f"tiny-{k}"], _tiny(k, f"tiny-{k}"))
        for k in sr
    ]
    found += [
        Check("denoise", f"denoise {k}", ["denoise", "-m", f"tiny-{k}"], _tiny(k, f"tiny-{k}"))
        for k in ("scunet", "nafnet", "drunet", "dncnn", "fbcnn")
    ]
    found += [
        Check(
            "faces",
            f"faces {k}",
            ["faces", "-m", f"random-{k}"],
            _tiny(k, f"random-{k}"),
            "face",
        )
        for k in ("gfpgan", "codeformer", "restoreformer")
    ]
    found += [
        Check(
            "old-photo",
            "colorize ddcolor",
            ["colorize", "-m", "random-ddcolor"],
            _tiny("ddcolor", "random-ddcolor"),
            "gray",
        ),
        Check(
            "old-photo",
            "inpaint lama",
            ["inpaint", "--mask", "{mask}", "-m", "random-lama"],
            _tiny("lama", "random-lama"),
        ),
        Check(
            "diffusion",
            "refine sd15",
            ["refine", "-m", "tiny-sd15", "--steps", "2", "--seed", "11"],
            _zoo("diffusion_zoo", "sd15_checkpoint"),
        ),
        Check(
            "diffusion",
            "tiled-refine sd15",
            ["tiled-refine", "-m", "tiny-sd15", "--steps", "2", "--scale", "2", "--seed", "3"],
            _zoo("diffusion_zoo", "sd15_checkpoint"),
        ),
        Check(
            "diffusion",
            "hypir sd21",
            ["hypir", "-s", "2"],
            _zoo("diffusion_zoo", "hypir_models"),
        ),
        Check(
            "edit",
            "edit qwen-image-edit",
            ["edit", "--preset", "colorize", "--steps", "2", "--working-size", "64", "--seed", "9"],
            _zoo("edit_zoo", "qwen_split_files"),
            "gray",
        ),
        # the slowest on a CPU (its reference run): last, so a time limit cuts only it
        Check(
            "old-photo",
            "inpaint mat",
            ["inpaint", "--mask", "{mask}", "-m", "random-mat"],
            _tiny("mat", "random-mat"),
        ),
    ]
    return found


# --- inputs ---------------------------------------------------------------------------------


def inputs(folder: Path) -> dict[str, Path]:
    """The repository's sample photo (a crop of scikit-image's astronaut, her face in it) at
    96 px, at 512 px for the face detector, in gray, and a mask of two holes."""
    import cv2

    sample = cv2.imread(str(REPO / "docs" / "sample.png"), cv2.IMREAD_COLOR)
    if sample is None:
        raise SystemExit("docs/sample.png is missing")
    files = {}
    for name, side in (("photo", 96), ("face", 512)):
        img = cv2.resize(sample, (side, side), interpolation=cv2.INTER_AREA)
        files[name] = folder / f"{name}.png"
        cv2.imwrite(str(files[name]), img)
    gray = cv2.cvtColor(
        cv2.resize(sample, (96, 96), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
    )
    files["gray"] = folder / "gray.png"
    cv2.imwrite(str(files["gray"]), gray)
    mask = np.zeros((96, 96), np.uint8)
    mask[20:30, 10:60] = 255
    mask[50:80, 70:76] = 255
    files["mask"] = folder / "mask.png"
    cv2.imwrite(str(files["mask"]), mask)
    return files


# --- running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    seconds: float
    said: str  # the configuration line the command printed, or the end of its error
    image: np.ndarray | None = field(default=None, repr=False)


def run_cli(argv: list[str], out: Path) -> Outcome:
    """`restora argv` in this process (libraries stay loaded between checks)."""
    from backend.cli import main

    err = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse: its message is already in err
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # a crash is what this script is for: say it, go on
        code = -1
        err.write(traceback.format_exc())
    seconds = time.perf_counter() - start
    text = err.getvalue()
    if code != 0 or not out.exists():
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-6:])
        return Outcome(False, seconds, f"exit {code}: {tail}")
    import cv2

    said = next(
        (line.strip() for line in text.splitlines() if " on cuda" in line or " on cpu" in line), ""
    )
    return Outcome(True, seconds, said, cv2.imread(str(out), cv2.IMREAD_UNCHANGED))


def agreement(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """PSNR of the two devices' images; None where either has none or they differ in size."""
    if a is None or b is None or a.shape != b.shape:
        return None
    return psnr(a, b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--reference", default="cpu", help="the device to compare with; none")
    parser.add_argument(
        "--only",
        default="",
        help="groups (upscale,denoise,faces,old-photo,diffusion,edit) or "
        "checks ('upscale compact')",
    )
    parser.add_argument(
        "--precision",
        help="asked of the --device runs (-p), e.g. fp16 on a CPU: the GPU's "
        "half-precision code paths without a GPU",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    import os

    import torch

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device here: run with --device cpu to check the script")
        name = torch.cuda.get_device_name()
    else:
        name = f"{args.device} (checks the script, not a GPU)"
    print(f"{name}; torch {torch.__version__}", flush=True)
    groups = set(filter(None, args.only.split(",")))
    rows = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="restora-gpu-checks-") as tmp:
        folder = Path(tmp)
        os.environ["RESTORA_HOME"] = str(folder / "home")  # caches, not the user's
        files = inputs(folder)
        for check in checks():
            if groups and check.group not in groups and check.label not in groups:
                continue
            root = folder / "models" / check.label.replace(" ", "-")
            root.mkdir(parents=True)
            try:
                check.build(root)
            except Exception as exc:  # a package missing on that machine, say
                failed += 1
                print(f"  {check.label}: models not built: {type(exc).__name__}: {exc}", flush=True)
                rows.append({"check": check.label, "built": False, "error": str(exc)})
                continue
            results = {}
            for device in filter(lambda d: d != "none", (args.device, args.reference)):
                out = folder / f"{check.label.replace(' ', '-')}-{len(results)}.png"
                argv = [
                    *check.command[:1],
                    str(files[check.source]),
                    "-o",
                    str(out),
                    "--models-dir",
                    str(root),
                    "-d",
                    device,
                    *[a.replace("{mask}", str(files["mask"])) for a in check.command[1:]],
                ]
                if args.precision and not results:  # the device's run, not the reference's
                    argv += ["-p", args.precision]
                results[device if not results else "reference"] = run_cli(argv, out)
            mine = results[args.device]
            ref = results.get("reference")
            agree = agreement(mine.image, ref.image) if ref is not None else None
            failed += not mine.ok
            shown = "inf" if agree == math.inf else f"{agree:.1f} dB" if agree else "-"
            print(
                f"  {check.label}: {'ok' if mine.ok else 'FAILED'} {mine.seconds:.2f} s"
                f"{f' (vs {ref.seconds:.2f} s on {args.reference})' if ref else ''}, "
                f"agreement {shown}; {mine.said}",
                flush=True,
            )
            rows.append(
                {
                    "check": check.label,
                    "built": True,
                    "ok": mine.ok,
                    "seconds": mine.seconds,
                    "said": mine.said,
                    "reference_ok": ref.ok if ref else None,
                    "reference_seconds": ref.seconds if ref else None,
                    "psnr_db": agree if agree != math.inf else 999.0,
                }
            )
            if args.out:  # after each check, so a run cut short still leaves its findings
                args.out.write_text(json.dumps({"device": name, "checks": rows}, indent=1))
    print(f"{failed} of {len(rows)} checks failed on {args.device}", flush=True)
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
