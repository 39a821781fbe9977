#!/usr/bin/env python3
"""Face restoration benchmark: seconds per face for each model family, and where they go.

    .venv/bin/python bench/faces.py [--runs 3] [--families gfpgan,codeformer,restoreformer]

Each family is built at its real size (GFPGAN v1.4 / CodeFormer / RestoreFormer hyper-
parameters) with random weights: speed depends on the architecture, not on the weights. For
each: the model alone on one 512x512 aligned face in fp32 (what facexlib, A1111 and chaiNNer
run on a CPU) as the baseline, in the precision Restora chooses on this machine, and the whole
task on a real photo (scikit-image's astronaut: detect, align, restore, colour-match, paste).
Then face detection per megapixel. Figures are medians.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import median_seconds  # noqa: E402


def build(family: str):  # real-size networks
    if family == "gfpgan":
        from tests.model_zoo import _gfpgan

        return _gfpgan()
    if family == "codeformer":
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        return CodeFormer(
            dim_embd=512,
            n_head=8,
            n_layers=9,
            codebook_size=1024,
            latent_size=256,
            connect_list=["32", "64", "128", "256"],
            fix_modules=["quantize", "generator"],
        )
    from spandrel.architectures.RestoreFormer import RestoreFormer

    return RestoreFormer(
        n_embed=1024,
        embed_dim=256,
        ch=64,
        out_ch=3,
        ch_mult=(1, 2, 2, 4, 4, 8),
        num_res_blocks=2,
        attn_resolutions=(16,),
        dropout=0.0,
        in_channels=3,
        resolution=512,
        z_channels=256,
        double_z=False,
        enable_mid=True,
        head_size=8,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--families", default="gfpgan,codeformer,restoreformer")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from skimage import data

    from backend.devices import configure_threads
    from backend.faces import align
    from backend.faces.restorer import FaceRestorer
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import face_restore

    configure_threads()
    photo = np.ascontiguousarray(data.astronaut())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    from backend.faces.detect import shared_detector

    detector = shared_detector(torch.device("cpu"))
    found = detector.detect(photo)
    if not found:
        print("the detector found no face in the astronaut photo", file=sys.stderr)
        return 1
    to_face = align.align_affine(found[0].landmarks5)
    crop = align.warp(photo.astype(np.float32) / 255, to_face, 512, 512)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "facerestore_models"
        folder.mkdir()
        for family in args.families.split(","):
            torch.manual_seed(0)
            net = build(family)
            state = {k: v.contiguous() for k, v in net.state_dict().items()}
            save_file(state, str(folder / f"{family}.safetensors"))
            del net, state
            entry = Registry([Path(tmp)]).find(family)
            base = load_model(entry, device="cpu", precision="fp32")
            fp32 = median_seconds(lambda m=base: FaceRestorer(m).restore(crop), args.runs)
            chosen = load_model(entry, device="cpu", precision="auto")
            auto = (
                fp32
                if chosen.precision == "fp32" and not chosen.channels_last
                else median_seconds(lambda m=chosen: FaceRestorer(m).restore(crop), args.runs)
            )
            task = median_seconds(
                lambda m=chosen: face_restore.run(
                    photo, m, face_restore.FaceRestoreParams(), detector=detector
                ),
                args.runs,
            )
            label = chosen.precision + ("+nhwc" if chosen.channels_last else "")
            rows.append((family, entry.architecture, fp32, label, auto, task))
            del base, chosen

    print("\nseconds per face (512x512), medians; baseline = fp32 model call")
    print(f"{'family':14} {'arch':14} {'fp32':>8} {'chosen':>12} {'speed-up':>9} {'task':>8}")
    for family, arch, fp32, label, auto, task in rows:
        print(
            f"{family:14} {arch:14} {fp32:8.2f} {label:>6} {auto:5.2f} {fp32 / auto:8.2f}x "
            f"{task:8.2f}"
        )
    print("task = the whole job on the 512x512 photo with one face (detect + restore + paste)")

    print("\nface detection, medians")
    import cv2

    for side in (512, 1024, 2048, 4096):
        image = cv2.resize(photo, (side, side), interpolation=cv2.INTER_LINEAR)
        seconds = median_seconds(lambda im=image: detector.detect(im), args.runs)
        mp = side * side / 1e6
        print(f"{side}x{side} ({mp:5.2f} MP): {seconds:6.3f} s, {seconds / mp:6.3f} s/MP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
