"""Tiny random-weight networks of the families Restora supports, for loader round trips.

Each entry builds the real architecture class with small hyper-parameters; tests save its
state dict to a file and load it back through Restora's registry and spandrel's detection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class TinyModel:
    family: str  # spandrel architecture id
    build: Callable[[], torch.nn.Module]
    scale: int
    folder: str = "upscale_models"


def _compact(scale: int = 4) -> torch.nn.Module:
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)


def _esrgan() -> torch.nn.Module:
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)


def _swinir() -> torch.nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(
        upscale=2,
        img_size=16,
        window_size=4,
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        mlp_ratio=2,
        upsampler="pixelshuffledirect",
    )


def _span() -> torch.nn.Module:
    from spandrel.architectures.SPAN import SPAN

    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4)


def _omnisr() -> torch.nn.Module:
    from spandrel.architectures.OmniSR import OmniSR

    return OmniSR(num_in_ch=3, num_out_ch=3, num_feat=16, window_size=4, res_num=1, up_scale=2)


def _realcugan() -> torch.nn.Module:
    from spandrel.architectures.RealCUGAN import UpCunet2x

    return UpCunet2x(in_channels=3, out_channels=3)


def _scunet() -> torch.nn.Module:
    from spandrel.architectures.SCUNet import SCUNet

    return SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64)


def _nafnet() -> torch.nn.Module:
    from spandrel.architectures.NAFNet import NAFNet

    return NAFNet(
        img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]
    )


def _drunet() -> torch.nn.Module:
    from spandrel.architectures.DRUNet import DRUNet

    return DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2)


def _dncnn() -> torch.nn.Module:
    from spandrel.architectures.DnCNN import DnCNN

    return DnCNN(in_nc=3, out_nc=3, nc=8, nb=5)


def _dncnn_gray() -> torch.nn.Module:
    from spandrel.architectures.DnCNN import DnCNN

    return DnCNN(in_nc=1, out_nc=1, nc=8, nb=5)


def _fdncnn() -> torch.nn.Module:
    # FDnCNN takes a noise-level map as a fourth input channel, like DRUNet
    from spandrel.architectures.DnCNN import DnCNN

    return DnCNN(in_nc=4, out_nc=3, nc=8, nb=5, mode="FDnCNN")


def _fbcnn() -> torch.nn.Module:
    # the quality head's Linear(512) fixes the deepest width at 512; nb=1 would drop the ".0."
    # from the keys spandrel detects FBCNN by
    from spandrel.architectures.FBCNN import FBCNN

    return FBCNN(in_nc=3, out_nc=3, nc=[8, 16, 32, 512], nb=2)


def _plksr() -> torch.nn.Module:
    from spandrel.architectures.PLKSR import PLKSR

    return PLKSR(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7, split_ratio=0.25)


def _safmn() -> torch.nn.Module:
    from spandrel.architectures.SAFMN import SAFMN

    return SAFMN(dim=8, n_blocks=1, ffn_scale=2.0, upscaling_factor=2)


def _rcan() -> torch.nn.Module:
    from spandrel.architectures.RCAN import RCAN

    return RCAN(n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4, scale=2)


def _gfpgan() -> torch.nn.Module:
    # spandrel builds GFPGAN at its one real size (StyleGAN2 decoder, 512 px): 86 M parameters
    from spandrel.architectures.GFPGAN import GFPGAN

    return GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )


def _codeformer() -> torch.nn.Module:
    # the VQ autoencoder has fixed sizes; the transformer is made small (1 layer, 64 wide)
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    return CodeFormer(
        dim_embd=64,
        n_head=8,
        n_layers=1,
        codebook_size=1024,
        latent_size=256,
        connect_list=["32", "64", "128", "256"],
        fix_modules=["quantize", "generator"],
    )


def _restoreformer() -> torch.nn.Module:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    return RestoreFormer(
        n_embed=64,
        embed_dim=32,
        ch=32,
        out_ch=3,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=1,
        attn_resolutions=(16,),
        dropout=0.0,
        in_channels=3,
        resolution=512,
        z_channels=32,
        double_z=False,
        enable_mid=True,
        head_size=8,
    )


TINY_MODELS: dict[str, TinyModel] = {
    "compact": TinyModel("Compact", _compact, 4),
    "esrgan": TinyModel("ESRGAN", _esrgan, 4),
    "swinir": TinyModel("SwinIR", _swinir, 2),
    "span": TinyModel("SPAN", _span, 4),
    "omnisr": TinyModel("OmniSR", _omnisr, 2),
    "realcugan": TinyModel("RealCUGAN", _realcugan, 2),
    "scunet": TinyModel("SCUNet", _scunet, 1),
    "nafnet": TinyModel("NAFNet", _nafnet, 1),
    "drunet": TinyModel("DRUNet", _drunet, 1),
    "dncnn": TinyModel("DnCNN", _dncnn, 1),
    "dncnn-gray": TinyModel("DnCNN", _dncnn_gray, 1),
    "fdncnn": TinyModel("DnCNN", _fdncnn, 1),
    "fbcnn": TinyModel("FBCNN", _fbcnn, 1),
    "plksr": TinyModel("PLKSR", _plksr, 2),
    "safmn": TinyModel("SAFMN", _safmn, 2),
    "rcan": TinyModel("RCAN", _rcan, 2),
}

#: face restoration models: GFPGAN and CodeFormer cannot be made tiny (saved in fp16, about
#: 170 and 150 MB), so tests save them once per session
FACE_MODELS: dict[str, TinyModel] = {
    "gfpgan": TinyModel("GFPGAN", _gfpgan, 1, "facerestore_models"),
    "codeformer": TinyModel("CodeFormer", _codeformer, 1, "facerestore_models"),
    "restoreformer": TinyModel("RestoreFormer", _restoreformer, 1, "facerestore_models"),
}


def _ddcolor() -> torch.nn.Module:
    from spandrel_extra_arches.architectures.DDColor import DDColor

    # the smallest encoder spandrel detects (ConvNeXt-T); few queries and one decoder layer
    return DDColor(encoder_name="convnext-t", num_queries=16, dec_layers=1, num_output_channels=2)


def _lama() -> torch.nn.Module:
    from spandrel.architectures.LaMa import LaMa

    return LaMa(in_nc=4, out_nc=3)  # LaMa has one size: big-lama's


def _mat() -> torch.nn.Module:
    from spandrel_extra_arches.architectures.MAT import MAT

    return MAT()  # one size: Places512's


#: old-photo models: LaMa and MAT exist only at their real size (about 100 and 120 MB in
#: fp16), DDColor at its smallest encoder
OLD_PHOTO_MODELS: dict[str, TinyModel] = {
    "ddcolor": TinyModel("DDColor", _ddcolor, 1, "colorization"),
    "lama": TinyModel("LaMa", _lama, 1, "inpaint"),
    "mat": TinyModel("MAT", _mat, 1, "inpaint"),
}


def save_tiny(
    key: str,
    models_root: Path,
    file_name: str | None = None,
    fmt: str = "safetensors",
    seed: int = 0,
) -> Path:
    """Build `key` with seeded random weights and save it under models_root/<folder>/."""
    spec = TINY_MODELS.get(key) or FACE_MODELS.get(key) or OLD_PHOTO_MODELS[key]
    torch.manual_seed(seed)
    net = spec.build()
    state: dict[str, Any] = {
        k: v.detach().clone().contiguous() for k, v in net.state_dict().items()
    }
    if key in FACE_MODELS or key in OLD_PHOTO_MODELS:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    folder = models_root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file_name or 'tiny-' + key}.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path
