"""Seconds per megapixel of each old-photo tool on this machine, and the whole chain on a scan.

Each network is built at its real size with random weights (speed does not depend on the
weights): DDColor paper-tiny (ConvNeXt-T), big-LaMa, MAT (Places512), DnCNN-color (17 layers),
GFPGAN v1.4 and realesr-general-x4v3 (Compact, x4), loaded through Restora's registry with the
precision Restora chooses here (`--precision auto` measures once per architecture, as the
product does; the default fp32 is what this CPU picks, see `restora doctor`). The tools run on
a crop of skimage's camera with drawn scratches and dust; the chain on a 2 MP scan of it.

    python bench/old_photo.py [--quick] [--runs 3] [--precision fp32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def real_size_models(root: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DnCNN import DnCNN
    from spandrel_extra_arches.architectures.DDColor import DDColor

    from tests.model_zoo import _gfpgan, _lama, _mat

    nets = {
        "colorization/ddcolor-tiny": lambda: DDColor(
            encoder_name="convnext-t", num_queries=100, dec_layers=9, num_output_channels=2
        ),
        "inpaint/big-lama": _lama,
        "inpaint/mat-places512": _mat,
        "upscale_models/dncnn-color": lambda: DnCNN(in_nc=3, out_nc=3, nc=64, nb=20),
        "facerestore_models/gfpgan-v1.4": _gfpgan,
        "upscale_models/realesr-general-x4v3": lambda: Compact(
            num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4
        ),
    }
    for name, build in nets.items():
        torch.manual_seed(0)
        state = {k: v.detach().contiguous() for k, v in build().state_dict().items()}
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(root / f"{name}.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--chain-mp", type=float, default=None, help="the scan's size (2 MP)")
    parser.add_argument("--chain-only", action="store_true", help="skip the tools' table")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    tool_side, chain_mp = (256, 0.25) if args.quick else (512, 2.0)
    chain_mp = args.chain_mp or chain_mp

    import cv2
    import torch
    from skimage import data

    from backend.devices import configure_threads, cpu_model
    from backend.executor import run_task
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import colorize, defects, denoise, inpaint, restore_old_photo, upscale
    from backend.tasks.context import TaskContext
    from backend.tasks.spec import Limits, TaskInputs
    from tests.defect_samples import draw_defects

    configure_threads()
    print(f"{cpu_model()} ({platform.node()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, precision {args.precision}")  # fmt: skip
    camera = data.camera()
    tool_photo, _ = draw_defects(cv2.resize(camera, (tool_side, tool_side)), seed=0)
    side = round((chain_mp * 1e6) ** 0.5)
    scan, _ = draw_defects(cv2.resize(camera, (side, side), interpolation=cv2.INTER_CUBIC), seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        real_size_models(root)
        registry = Registry([root], index_file=root / "index.json")
        store = ModelCache(device="cpu", precision=args.precision, max_models=None)

        def job(spec, pixels, model=None, mask=None, **raw):
            params = spec.parse_params(raw)
            inputs = TaskInputs(pixels[..., None] if pixels.ndim == 2 else pixels, mask)
            entries = {"model": registry.find(model)} if model else {}
            if spec.prepare is not None:
                spec.prepare(params, inputs, entries.get("model"), Limits(10**9))
            ctx = TaskContext()
            ctx.registry = registry
            return run_task(spec, inputs, params, entries, store, ctx)

        holes = defects.run(tool_photo[..., None], defects.DefectParams(), TaskContext())[0]
        tools = {
            "defects (no model)": lambda: job(defects.SPEC, tool_photo),
            "inpaint LaMa (the marked defects)": lambda: job(
                inpaint.SPEC, tool_photo, "big-lama", holes
            ),
            "inpaint MAT (the marked defects)": lambda: job(
                inpaint.SPEC, tool_photo, "mat-places512", holes
            ),
            "denoise DnCNN": lambda: job(denoise.SPEC, tool_photo, "dncnn-color"),
            "colorize DDColor-tiny": lambda: job(colorize.SPEC, tool_photo, "ddcolor-tiny"),
            "upscale x4 Compact (per input MP)": lambda: job(
                upscale.SPEC, tool_photo, "realesr-general-x4v3"
            ),
        }
        mp = tool_side * tool_side / 1e6
        print(f"\n| tool, on {tool_side}x{tool_side} | median s | s/MP |")
        print("| --- | --- | --- |")
        for name, fn in ({} if args.chain_only else tools).items():
            fn()  # loads the model and warms up
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            t = statistics.median(times)
            print(f"| {name} | {t:.2f} | {t / mp:.1f} |", flush=True)

        start = time.perf_counter()
        result = job(restore_old_photo.SPEC, scan, scale=2.0)
        total = time.perf_counter() - start
        stages = ", ".join(o.name for o in result.outputs)
        print(f"\nchain on a {side}x{side} scan ({side * side / 1e6:.1f} MP, x2): {total:.1f} s "
              f"({stages}); {result.details['notes'].get('faces', '')}")  # fmt: skip
        per_stage = ", ".join(f"{k} {v:.1f} s" for k, v in result.details["seconds"].items())
        print(f"per stage (the first run of each model includes its loading): {per_stage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
