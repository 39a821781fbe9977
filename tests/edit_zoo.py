"""Tiny random-weight instruction-editing pipelines, saved in the layouts users have.

- `qwen_edit_plus_folder` / `qwen_edit_folder`: diffusers folders of Qwen-Image-Edit-2509
  (QwenImageEditPlusPipeline) and the first Qwen-Image-Edit, with a tiny Qwen2.5-VL text
  encoder that reads Restora's shipped Qwen tokenizer (the real vocabulary and special-token
  ids, so the same files serve the split layout);
- `qwen_split_files`: the same model as ComfyUI keeps it: the transformer in diffusion_models/
  (.safetensors, or .gguf when `gguf` is true), the text encoder in text_encoders/ (optionally
  fp8 with per-layer scales, as ComfyUI's "fp8_scaled" files) and the VAE in vae/ (in the
  original Wan-style key names);
- `kontext_folder`: FLUX.1 Kontext (CLIP + T5 text encoders, a 16-channel VAE);
- `ip2p_folder`: InstructPix2Pix (an SD 1.5 UNet with 8 input channels).

Every block is a few thousand parameters; the embedding of the Qwen vocabulary is the largest
part (152k x 32).
"""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
QWEN_TOKENIZER = REPO / "backend" / "diffusion" / "configs" / "qwen_tokenizer"
CLIP_TOKENIZER = REPO / "backend" / "diffusion" / "configs" / "clip_tokenizer"
#: the tiny Qwen text encoder's width (the transformer's joint attention width)
QWEN_HIDDEN = 32
#: the real Qwen2.5 vocabulary size: the shipped tokenizer's ids must fit
QWEN_VOCAB = 152064


def _qwen_text_encoder(seed: int = 11) -> torch.nn.Module:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": QWEN_VOCAB, "hidden_size": QWEN_HIDDEN, "intermediate_size": 48,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 4096, "max_window_layers": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
            "out_hidden_size": QWEN_HIDDEN, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [0],
        },
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen_processor() -> tuple[object, object]:
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor.from_pretrained(QWEN_TOKENIZER)
    return processor.tokenizer, processor


def _qwen_vae(seed: int = 12) -> torch.nn.Module:
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ).eval()  # fmt: skip


def qwen_transformer(seed: int = 13, zero_cond_t: bool = False) -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=QWEN_HIDDEN, axes_dims_rope=(2, 6, 8),
        zero_cond_t=zero_cond_t,
    ).eval()  # fmt: skip


def _flow_scheduler() -> object:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip


def qwen_parts() -> dict[str, object]:
    tokenizer, processor = _qwen_processor()
    return {
        "transformer": qwen_transformer(), "vae": _qwen_vae(),
        "text_encoder": _qwen_text_encoder(), "tokenizer": tokenizer, "processor": processor,
        "scheduler": _flow_scheduler(),
    }  # fmt: skip


def qwen_edit_plus_folder(
    root: Path, name: str = "tiny-qwen-image-edit-2509", folder: str = "diffusion_models"
) -> Path:
    from diffusers import QwenImageEditPlusPipeline

    path = root / folder / name
    QwenImageEditPlusPipeline(**qwen_parts()).save_pretrained(path)
    return path


def qwen_edit_folder(root: Path, name: str = "tiny-qwen-image-edit") -> Path:
    from diffusers import QwenImageEditPipeline

    parts = qwen_parts()
    path = root / "diffusion_models" / name
    QwenImageEditPipeline(**parts).save_pretrained(path)
    return path


# --- ComfyUI's split files ---------------------------------------------------------------


def _text_encoder_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5's key names -> the original Qwen2.5-VL checkpoint names ComfyUI keeps."""
    out = {}
    for key, value in sd.items():
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        elif key.startswith("model.visual."):
            key = "visual." + key[len("model.visual.") :]
        out[key] = value.contiguous()
    return out


def _fp8_scaled(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every 2-D weight of a linear layer as float8 e4m3 with a per-tensor scale beside it."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(".weight") and value.ndim == 2 and "embed" not in key:
            scale = value.abs().max().clamp(min=1e-8) / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(1).float()
        else:
            out[key] = value
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


_VAE_HEAD = {"norm_out.gamma": "head.0.gamma", "conv_out.": "head.2.", "conv_in.": "conv1."}
_VAE_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.",
               "norm2.gamma": "residual.3.gamma", "conv2.": "residual.6.",
               "conv_shortcut.": "shortcut."}  # fmt: skip


def _vae_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' Qwen-Image VAE names -> the original (Wan 2.1 style) names of
    qwen_image_vae.safetensors, the inverse of diffusers' own conversion."""
    out = {}
    for key, value in sd.items():
        new = key
        new = new.replace("quant_conv.", "conv1.") if new.startswith("quant_conv.") else new
        new = (
            new.replace("post_quant_conv.", "conv2.") if new.startswith("post_quant_conv.") else new
        )
        for side in ("encoder", "decoder"):
            p = f"{side}."
            if not new.startswith(p):
                continue
            rest = new[len(p) :]
            if rest.startswith("mid_block.resnets."):
                index, tail = rest[len("mid_block.resnets.") :].split(".", 1)
                for a, b in _VAE_RESNET.items():
                    tail = tail.replace(a, b) if tail.startswith(a) else tail
                rest = f"middle.{2 * int(index)}.{tail}"
            elif rest.startswith("mid_block.attentions.0."):
                rest = "middle.1." + rest[len("mid_block.attentions.0.") :]
            elif rest.startswith(("down_blocks.", "up_blocks.")):
                kind = "downsamples." if rest.startswith("down_blocks.") else "upsamples."
                rest = kind + rest.split(".", 1)[1]
                parts = rest.split(".")
                tail = ".".join(parts[2:])
                for a, b in _VAE_RESNET.items():
                    tail = tail.replace(a, b) if tail.startswith(a) else tail
                rest = ".".join(parts[:2]) + "." + tail
            else:
                for a, b in _VAE_HEAD.items():
                    rest = b + rest[len(a) :] if rest.startswith(a) else rest
            new = p + rest
        out[new] = value.contiguous()
    return out


def qwen_split_files(
    root: Path,
    name: str = "tiny-qwen-edit-2509",
    *,
    fp8_text_encoder: bool = False,
    gguf: bool = False,
) -> dict[str, Path]:
    """The transformer, text encoder and VAE of the tiny model as three files in ComfyUI's
    folders; returns their paths ("transformer", "text_encoder", "vae")."""
    from safetensors.torch import save_file

    parts = qwen_parts()
    paths = {
        "transformer": root / "diffusion_models" / f"{name}.{'gguf' if gguf else 'safetensors'}",
        "text_encoder": root / "text_encoders" / "tiny_qwen_2.5_vl.safetensors",
        "vae": root / "vae" / "tiny_qwen_image_vae.safetensors",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    save_transformer(root, name, gguf=gguf, model=parts["transformer"])
    text = _text_encoder_original(parts["text_encoder"].state_dict())
    save_file(_fp8_scaled(text) if fp8_text_encoder else text, str(paths["text_encoder"]))
    save_file(_vae_original(parts["vae"].state_dict()), str(paths["vae"]))
    return paths


def save_transformer(
    root: Path, name: str, *, gguf: bool = False, model: torch.nn.Module | None = None
) -> Path:
    """The tiny Qwen transformer alone in diffusion_models/ (beside an existing text encoder
    and VAE): .safetensors, or .gguf with its weights in Q8_0."""
    from safetensors.torch import save_file

    path = root / "diffusion_models" / f"{name}.{'gguf' if gguf else 'safetensors'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in (model or qwen_transformer()).state_dict().items()}
    if gguf:
        write_gguf(sd, path)
    else:
        save_file(sd, str(path))
    return path


def qwen_lora_file(root: Path, name: str = "tiny-qwen-lora", rank: int = 4) -> Path:
    """A peft LoRA on the tiny Qwen transformer's attention, saved as diffusers saves Qwen
    LoRAs (the layout of the Lightning LoRAs)."""
    from diffusers import QwenImageEditPlusPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = qwen_transformer()
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    torch.manual_seed(41)
    for key, p in model.named_parameters():
        if "lora_B" in key:
            torch.nn.init.normal_(p, std=0.5)  # peft starts B at zero: it must change something
    folder = root / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    QwenImageEditPlusPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(model),
        weight_name=f"{name}.safetensors",
    )  # fmt: skip
    return folder / f"{name}.safetensors"


def write_gguf(sd: dict[str, torch.Tensor], path: Path) -> None:
    """The tensors as a GGUF file: 2-D weights quantized to Q8_0 where their rows allow it
    (blocks of 32), the rest kept in F32, as city96's and QuantStack's files do."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="qwen_image")
    for key, value in sd.items():
        data = value.float().numpy()
        if data.ndim == 2 and data.shape[1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(key, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- FLUX.1 Kontext and InstructPix2Pix ---------------------------------------------------


def _clip_text(hidden: int = 32, seed: int = 21) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, projection_dim=hidden, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))  # fmt: skip


def _t5(seed: int = 22) -> tuple[torch.nn.Module, object]:
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(chr(c), -2.0) for c in range(33, 127)]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(
        vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8,
    ))  # fmt: skip
    return model, tokenizer


def kontext_folder(root: Path, name: str = "tiny-flux-kontext") -> Path:
    from diffusers import AutoencoderKL, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer

    torch.manual_seed(23)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6), guidance_embeds=True,
    )  # fmt: skip
    torch.manual_seed(24)
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=64, shift_factor=0.1159, scaling_factor=0.3611,
        use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    t5, t5_tokenizer = _t5()
    pipe = FluxKontextPipeline(
        scheduler=_flow_scheduler(), vae=vae, text_encoder=_clip_text(),
        tokenizer=CLIPTokenizer.from_pretrained(CLIP_TOKENIZER), text_encoder_2=t5,
        tokenizer_2=t5_tokenizer, transformer=transformer,
    )  # fmt: skip
    path = root / "diffusion_models" / name
    pipe.save_pretrained(path)
    return path


def ip2p_folder(root: Path, name: str = "tiny-instruct-pix2pix") -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    torch.manual_seed(31)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )  # fmt: skip
    torch.manual_seed(32)
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=64,
    )  # fmt: skip
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=_clip_text(seed=33),
        tokenizer=CLIPTokenizer.from_pretrained(CLIP_TOKENIZER), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    path = root / "checkpoints" / name
    pipe.save_pretrained(path)
    return path
