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
- `sd21_checkpoint` / `sdxl_checkpoint`: single files in SD 2.x's layout (OpenCLIP text tower
  under cond_stage_model.model.*, linear projections; v-style weights or not) and SDXL's (CLIP-L
  under conditioner.embedders.0.transformer.*, OpenCLIP bigG under
  conditioner.embedders.1.model.*, the text-time embedding as label_emb; a `v_pred` key or
  not), built by `unet_to_ldm` and `clip_to_open_clip`, which also turn full-size models on
  the meta device into the released files' key layouts;
- `sd15_controlnet` / `sdxl_controlnet`: ControlNets in controlnet/ as lllyasviel releases
  them (`control_model.*`), as one diffusers-named file, or as a diffusers folder.
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
    unet = parts["unet"]
    # SD 1.5's key names: the general converter at its four levels of two blocks
    sd = unet_to_ldm(unet.state_dict(), tuple(unet.config.down_block_types),
                     unet.config.layers_per_block, "model.diffusion_model.")
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


# --- SD 2.1 and SDXL single files, and ControlNets, with the key names of the released files ---


def unet_to_ldm(
    sd: dict[str, torch.Tensor], down_types: tuple[str, ...], layers: int, prefix: str
) -> dict[str, torch.Tensor]:
    """A diffusers UNet (or ControlNet encoder) state dict in the original key names for any
    number of levels, blocks per level and attending levels (SD 1.x/2.x: four levels, the
    last without attention; SDXL: three, the first without)."""
    attends = [t.startswith("CrossAttn") for t in down_types]
    levels = len(down_types)
    renames = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.resnets.1.", "middle_block.2."),
    ]  # fmt: skip
    for i in range(levels):
        for j in range(layers):
            n = 1 + i * (layers + 1) + j
            renames.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0."))
            if attends[i]:
                renames.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1."))
        if i < levels - 1:
            n = (i + 1) * (layers + 1)
            renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n}.0.op."))
    up_attends = attends[::-1]
    for i in range(levels):
        for j in range(layers + 1):
            n = i * (layers + 1) + j
            renames.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0."))
            if up_attends[i]:
                renames.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1."))
        if i < levels - 1:
            n = i * (layers + 1) + layers
            slot = 2 if up_attends[i] else 1
            renames.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{n}.{slot}."))
    # a ControlNet's own parts: the zero convolutions and the condition embedding
    renames += [("controlnet_mid_block.", "middle_block_out.0."),
                ("controlnet_cond_embedding.conv_in.", "input_hint_block.0.")]  # fmt: skip
    for i in range(64):
        renames.append((f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0."))
    for i in range(8):
        renames.append((f"controlnet_cond_embedding.blocks.{i}.", f"input_hint_block.{2 * i + 2}."))
    blocks = {k for k in sd if k.startswith("controlnet_cond_embedding.blocks.")}
    hint_out = 2 * (1 + sum(k.endswith(".weight") for k in blocks))
    renames.append(("controlnet_cond_embedding.conv_out.", f"input_hint_block.{hint_out}."))
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
        out[prefix + new] = value
    return out


def clip_to_open_clip(
    sd: dict[str, torch.Tensor], prefix: str, projection: bool
) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's state dict in OpenCLIP's names (SD 2.x's
    `cond_stage_model.model.*`, SDXL's `conditioner.embedders.1.model.*`): fused q/k/v
    in_proj, resblocks, ln_final, the projection as a matrix applied on the right."""
    sd = {_text_model(k) if not k.startswith("text_projection") else k: v for k, v in sd.items()}
    t = "text_model."
    out = {
        "token_embedding.weight": sd[f"{t}embeddings.token_embedding.weight"],
        "positional_embedding": sd[f"{t}embeddings.position_embedding.weight"],
        "ln_final.weight": sd[f"{t}final_layer_norm.weight"],
        "ln_final.bias": sd[f"{t}final_layer_norm.bias"],
        "logit_scale": torch.tensor(4.6052),
    }
    hidden = out["token_embedding.weight"].shape[1]
    if projection:
        out["text_projection"] = sd["text_projection.weight"].T
    else:  # SD 2.x files carry OpenCLIP's projection too, unused by the UNet
        out["text_projection"] = torch.eye(hidden)
    layers = {k.split(".")[3] for k in sd if k.startswith(f"{t}encoder.layers.")}
    for n in sorted(layers, key=int):
        a = f"{t}encoder.layers.{n}."
        b = f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{b}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{a}self_attn.{q}_proj.{kind}"] for q in ("q", "k", "v")]
            )
            out[f"{b}attn.out_proj.{kind}"] = sd[f"{a}self_attn.out_proj.{kind}"]
            out[f"{b}ln_1.{kind}"] = sd[f"{a}layer_norm1.{kind}"]
            out[f"{b}ln_2.{kind}"] = sd[f"{a}layer_norm2.{kind}"]
            out[f"{b}mlp.c_fc.{kind}"] = sd[f"{a}mlp.fc1.{kind}"]
            out[f"{b}mlp.c_proj.{kind}"] = sd[f"{a}mlp.fc2.{kind}"]
    return {prefix + k: v.contiguous() for k, v in out.items()}


def _vae_keys(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {"first_stage_model." + k: v for k, v in _vae_to_ldm(vae.state_dict()).items()}


SD21_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
SDXL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
#: SDXL's added time embedding is 256 wide in every released model; the tiny one keeps it
SDXL_TIME_DIM = 256


def _clip_layers(hidden: int, layers: int, projection: bool, seed: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, projection_dim=hidden,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def sd21_parts() -> dict[str, torch.nn.Module]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(8)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 8, block_out_channels=(32, 64, 64, 64), layers_per_block=2,
        down_block_types=SD21_DOWN,
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=48, attention_head_dim=(2, 4, 4, 4), use_linear_projection=True,
        norm_num_groups=32,
    )  # fmt: skip
    # three OpenCLIP layers in the file: SD 2 conditions on the penultimate, so two load
    return {"unet": unet, "vae": _vae(9), "text_encoder": _clip_layers(48, 3, False, 10)}


def sd21_checkpoint(folder: Path, name: str = "tiny-sd21", v_weights: bool = True) -> Path:
    """checkpoints/<name>.safetensors in SD 2.x's original layout: OpenCLIP text tower under
    cond_stage_model.model.*, linear attention projections, a 1024-style context. With
    `v_weights` the last up-block's norm biases spread as a 768-v model's do."""
    from safetensors.torch import save_file

    parts = sd21_parts()
    unet_sd = parts["unet"].state_dict()
    if v_weights:
        g = torch.Generator().manual_seed(11)
        for key in [k for k in unet_sd if k.endswith("transformer_blocks.0.norm1.bias")]:
            unet_sd[key] = torch.randn(unet_sd[key].shape, generator=g) * 0.2
        parts["unet"].load_state_dict(unet_sd)
    sd = unet_to_ldm(unet_sd, SD21_DOWN, 2, "model.diffusion_model.")
    sd.update(_vae_keys(parts["vae"]))
    sd.update(
        clip_to_open_clip(parts["text_encoder"].state_dict(), "cond_stage_model.model.", False)
    )
    path = folder / "checkpoints" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"modelspec.resolution": f"{NATIVE}x{NATIVE}"})  # fmt: skip
    return path


def sdxl_parts() -> dict[str, torch.nn.Module]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(12)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 8, block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=SDXL_DOWN,
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4),
        use_linear_projection=True, cross_attention_dim=32 + 48,
        addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + 48, norm_num_groups=32,
    )  # fmt: skip
    return {
        "unet": unet, "vae": _vae(13), "text_encoder": _clip_layers(32, 2, False, 14),
        "text_encoder_2": _clip_layers(48, 2, True, 15),
    }  # fmt: skip


def sdxl_checkpoint(folder: Path, name: str = "tiny-sdxl-file", v_pred: bool = False) -> Path:
    """checkpoints/<name>.safetensors in SDXL's original layout: CLIP-L under
    conditioner.embedders.0.transformer.*, OpenCLIP bigG under conditioner.embedders.1.model.*,
    the text-time embedding as label_emb. With `v_pred`, the empty `v_pred` key of a
    v-prediction fine-tune."""
    from safetensors.torch import save_file

    parts = sdxl_parts()
    sd = unet_to_ldm(parts["unet"].state_dict(), SDXL_DOWN, 2, "model.diffusion_model.")
    sd.update(_vae_keys(parts["vae"]))
    sd.update({"conditioner.embedders.0.transformer." + _text_model(k): v
               for k, v in parts["text_encoder"].state_dict().items()})  # fmt: skip
    bigg = parts["text_encoder_2"].state_dict()
    sd.update(clip_to_open_clip(bigg, "conditioner.embedders.1.model.", True))
    if v_pred:
        sd["v_pred"] = torch.zeros(0)
    path = folder / "checkpoints" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"modelspec.resolution": f"{NATIVE}x{NATIVE}"})  # fmt: skip
    return path


def _controlnet_of(unet: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A ControlNet copied from `unet`'s encoder, its zero convolutions made non-zero (a
    trained one's are, and a zero one would change nothing)."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                "controlnet_cond_embedding.conv_out")):  # fmt: skip
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def sd15_controlnet(folder: Path, name: str = "tiny-sd15-tile", layout: str = "ldm") -> Path:
    """controlnet/<name>: a ControlNet for the tiny SD 1.5 model, as lllyasviel's releases
    (`control_model.*` names, layout "ldm"), diffusers' single file ("diffusers") or a
    diffusers folder ("folder")."""
    from safetensors.torch import save_file

    net = _controlnet_of(_unet_sd15(), 16)
    root = folder / "controlnet"
    root.mkdir(parents=True, exist_ok=True)
    if layout == "folder":
        net.save_pretrained(root / name)
        return root / name
    sd = net.state_dict()
    if layout == "ldm":
        sd = unet_to_ldm(sd, ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), 2, "control_model.")
    path = root / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def sdxl_controlnet(folder: Path, name: str = "tiny-sdxl-tile") -> Path:
    """controlnet/<name>.safetensors: an SDXL ControlNet in diffusers' key names in one file,
    as the SDXL tile ControlNets are shared."""
    from safetensors.torch import save_file

    net = _controlnet_of(sdxl_parts()["unet"], 17)
    path = folder / "controlnet" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path
