"""Tiny random-weight Stable Diffusion models, saved in the layouts users have.

- `sd15_checkpoint`: one .safetensors file with the original (LDM / A1111 / ComfyUI) key
  names of an SD 1.5 checkpoint (SD 1.5's block structure at small widths), which Restora
  loads through diffusers' own single-file conversion against its shipped configuration;
- `sd15_folder` / `sdxl_folder`: diffusers folders (SDXL: two text encoders, text-time
  conditioning);
- `vae_file`: an original-layout VAE for vae/; `lora_file`: a LoRA for the tiny UNet;
- `sd21_folder`: an SD 2.1-style diffusers folder (linear projections in the transformers, as
  SD 2.x has), the base `hypir_lora_file` runs on: a HYPIR LoRA saved as HYPIR saves its
  HYPIR_sd2.pth (peft's keys with the adapter's name, on HYPIR's target layers, torch.save).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: the tiny models' native side: 8 latent pixels x the VAE's factor of 8
NATIVE = 64
TOKENIZER = (
    Path(__file__).resolve().parents[1] / "backend" / "diffusion" / "configs" / "clip_tokenizer"
)


def _unet_sd15() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=NATIVE // 8,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _vae(seed: int = 1) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=NATIVE,
    )


def _clip(hidden: int = 32, projection: bool = False, seed: int = 2) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=8, projection_dim=hidden, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _scheduler() -> object:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip


def _tokenizer() -> object:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER)


# --- diffusers -> original key names (the inverse of diffusers' single-file conversion) ---


def _unet_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renames = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.resnets.1.", "middle_block.2."),
    ]  # fmt: skip
    for i in range(4):
        for j in range(2):
            renames.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{3 * i + j + 1}.0."))
            if i < 3:
                renames.append(
                    (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{3 * i + j + 1}.1.")
                )
        for j in range(3):
            renames.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{3 * i + j}.0."))
            if i > 0:
                renames.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{3 * i + j}.1."))
        if i < 3:
            renames.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{3 * (i + 1)}.0.op.")
            )
            renames.append(
                (f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.")
            )
    resnet = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
              ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
              ("conv_shortcut.", "skip_connection.")]  # fmt: skip
    out = {}
    for key, value in sd.items():
        new = key
        for a, b in renames:
            if new.startswith(a):
                new = b + new[len(a) :]
                break
        if "resnets" in key:
            for a, b in resnet:
                new = new.replace(a, b)
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(sd: dict[str, torch.Tensor], levels: int = 4) -> dict[str, torch.Tensor]:
    renames = [("mid_block.attentions.0.", "mid.attn_1."), ("conv_norm_out.", "norm_out.")]
    for i in range(2):
        renames.append((f"mid_block.resnets.{i}.", f"mid.block_{i + 1}."))
    for i in range(levels):
        renames.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
        )
        renames.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        renames.append(
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")
        )
        renames.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block."))
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
            ("to_out.0.", "proj_out.")]  # fmt: skip
    out = {}
    for key, value in sd.items():
        new = key
        for a, b in renames:
            new = new.replace(a, b)
        if "mid.attn_1." in new:
            for a, b in attn:
                new = new.replace(a, b)
            if value.ndim == 2:
                value = value[:, :, None, None]  # the original stores 1x1 convolutions
        new = new.replace("conv_shortcut.", "nin_shortcut.")
        out[new] = value.contiguous()
    return out


def _text_model(key: str) -> str:
    """Checkpoints name CLIP's tensors text_model.*; transformers 5.6+ flattened CLIPTextModel."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def sd15_parts() -> dict[str, object]:
    return {
        "unet": _unet_sd15(), "vae": _vae(), "text_encoder": _clip(),
        "tokenizer": _tokenizer(), "scheduler": _scheduler(),
    }  # fmt: skip


def sd15_checkpoint(folder: Path, name: str = "tiny-sd15") -> Path:
    """checkpoints/<name>.safetensors with the original key names, as A1111 and ComfyUI have."""
    from safetensors.torch import save_file

    parts = sd15_parts()
    sd = _unet_to_ldm(parts["unet"].state_dict())
    sd.update(
        {"first_stage_model." + k: v for k, v in _vae_to_ldm(parts["vae"].state_dict()).items()}
    )
    sd.update({"cond_stage_model.transformer." + _text_model(k): v
               for k, v in parts["text_encoder"].state_dict().items()})  # fmt: skip
    path = folder / "checkpoints" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"modelspec.resolution": f"{NATIVE}x{NATIVE}"})  # fmt: skip
    return path


def sd15_folder(folder: Path, name: str = "tiny-sd15-diffusers") -> Path:
    from diffusers import StableDiffusionPipeline

    parts = sd15_parts()
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    path = folder / "checkpoints" / name
    pipe.save_pretrained(path)
    return path


def sdxl_folder(folder: Path, name: str = "tiny-sdxl") -> Path:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 8, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=32,
    )  # fmt: skip
    tok2 = _tokenizer()
    tok2.pad_token = "!"
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=_vae(4), text_encoder=_clip(32, seed=5), tokenizer=_tokenizer(),
        text_encoder_2=_clip(32, projection=True, seed=6), tokenizer_2=tok2, scheduler=_scheduler(),
    )  # fmt: skip
    path = folder / "checkpoints" / name
    pipe.save_pretrained(path)
    return path


def vae_file(folder: Path, name: str = "tiny-vae") -> Path:
    from safetensors.torch import save_file

    path = folder / "vae" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_vae_to_ldm(_vae(7).state_dict()), str(path))
    return path


def lora_file(folder: Path, name: str = "tiny-lora", rank: int = 4) -> Path:
    """A peft LoRA on the tiny UNet's attention, saved as diffusers saves LoRAs."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = _unet_sd15()
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))  # fmt: skip
    for name_, p in unet.named_parameters():
        if "lora_B" in name_:
            torch.nn.init.normal_(
                p, std=0.2
            )  # peft starts B at zero: the LoRA must change something
    path = folder / "loras"
    path.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        path, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )
    return path / f"{name}.safetensors"


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


# --- HYPIR: an SD 2.1-style base and a LoRA on its layers ---------------------------------

#: the layers HYPIR's LoRA adapts (HYPIR's published configuration)
HYPIR_TARGETS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip


def unet_sd21() -> torch.nn.Module:
    """SD 2.1's UNet layout at a tiny size: cross-attention blocks with linear projections, a
    width change (conv_shortcut), a downsampler and an upsampler (`conv`): every kind of layer
    HYPIR's LoRA adapts."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(8)
    return UNet2DConditionModel(
        sample_size=NATIVE // 8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
    )  # fmt: skip


def sd21_folder(folder: Path, name: str = "tiny-sd21-base", where: str = "checkpoints") -> Path:
    from diffusers import StableDiffusionPipeline

    tok = _tokenizer()
    tok.pad_token = "!"  # OpenCLIP's padding, as SD 2.x's tokenizer has it
    pipe = StableDiffusionPipeline(
        unet=unet_sd21(), vae=_vae(9), text_encoder=_clip(seed=10), tokenizer=tok,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    path = folder / where / name
    pipe.save_pretrained(path)
    return path


def hypir_lora_file(
    folder: Path,
    name: str = "HYPIR_sd2",
    rank: int = 4,
    targets: tuple[str, ...] = HYPIR_TARGETS,
    std: float = 0.05,
) -> Path:
    """folder/HYPIR/<name>.pth: the LoRA tensors of a peft adapter on the tiny SD 2.1 UNet,
    keyed as HYPIR's file is (`down_blocks.0.resnets.0.conv1.lora_A.default.weight`)."""
    from peft import LoraConfig

    unet = unet_sd21()
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=list(targets)))  # fmt: skip
    torch.manual_seed(11)
    for key, p in unet.named_parameters():
        if "lora_B" in key:  # peft starts B at zero: the LoRA must change something
            torch.nn.init.normal_(p, std=std)
    tensors = {k: v.contiguous() for k, v in unet.state_dict().items() if "lora" in k}
    path = folder / "HYPIR" / f"{name}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)
    return path


def hypir_models(folder: Path) -> Path:
    """A models folder as a HYPIR user has it: the LoRA in HYPIR/, the base in checkpoints/."""
    sd21_folder(folder)
    hypir_lora_file(folder)
    return folder
