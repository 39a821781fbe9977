"""HYPIR as one loaded model: the SD 2.1 base's UNet with HYPIR's LoRA merged in, its VAE
and text encoder.

The base loads as refine loads it (backend.diffusion.loading: a single file through diffusers'
conversion, or a diffusers folder), in fp32 on the host. The LoRA goes in with peft (a
LoraConfig of the file's own rank, alpha = rank as HYPIR trains it, on exactly the layers the
file names), and is then merged into the weights: at rank 256 on every convolution an
unmerged LoRA almost doubles the UNet's work, and a job never needs the base without it.
Only then are the components cast to the run precision (bf16 on a GPU), so the merge is exact.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from backend.diffusion import hypir_files
from backend.errors import ModelFormatError

log = logging.getLogger("restora.diffusion")

#: HYPIR's one step: the UNet sees the clean latent as if noised to t = 200, and x0 is taken
#: with the same step's coefficients (its model_t and coeff_t)
TIMESTEP = 200
ADAPTER = "hypir"
_NAMED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class HypirModel:
    entry: Any
    base_name: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    #: the base schedule's cumulative alpha at TIMESTEP
    alpha_bar: float
    dtype: torch.dtype
    device: torch.device
    rank: int
    adapted_layers: int
    why_precision: str
    tier: str = ""
    _embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def precision_label(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    @property
    def precision_reason(self) -> str:
        return f"{self.why_precision}; {self.tier or 'not placed yet'}"

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}

    def weight_bytes(self) -> tuple[int, int]:
        """Bytes of all weights, and of the largest component (what one phase holds)."""
        sizes = [
            sum(p.numel() * p.element_size() for p in m.parameters())
            for m in self.modules().values()
        ]
        return sum(sizes), max(sizes)

    def place(self, tier: str) -> None:
        """Resident: every component on the device. Otherwise they wait on the host and go to
        the device one phase at a time (`on_device`): encoding, the UNet, decoding."""
        target = self.device if tier == "resident" else torch.device("cpu")
        for m in self.modules().values():
            m.to(target)
        self.tier = tier

    @contextmanager
    def on_device(self, name: str) -> Iterator[torch.nn.Module]:
        module = self.modules()[name]
        moved = self.tier not in ("", "resident") and self.device.type != "cpu"
        if moved:
            module.to(self.device)
        try:
            yield module
        finally:
            if moved:
                module.to("cpu")

    def text_embedding(self, prompt: str) -> torch.Tensor:
        """The prompt's CLIP embedding on the device (kept: a job's tiles share one)."""
        if prompt not in self._embeddings:
            ids = self.tokenizer(
                [prompt], max_length=self.tokenizer.model_max_length, padding="max_length",
                truncation=True, return_tensors="pt",
            ).input_ids  # fmt: skip
            with self.on_device("text_encoder") as encoder, torch.inference_mode():
                embedding = encoder(ids.to(self.device))[0]
            self._embeddings.clear()  # one prompt at a time is all a job needs
            self._embeddings[prompt] = embedding.to(self.device, self.dtype)
        return self._embeddings[prompt]


def run_dtype(device: torch.device, precision: str) -> tuple[torch.dtype, str]:
    """bf16 on CUDA (HYPIR's own precision; fp16 where the GPU has no bf16), fp16 on MPS, and
    on a CPU bf16 only where it has bf16 instructions (elsewhere bf16 is emulated: slower)."""
    if precision in _NAMED:
        return _NAMED[precision], "requested"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "cuda: bf16, as HYPIR runs"
        return torch.float16, "cuda: no bf16 on this GPU"
    if device.type == "mps":
        return torch.float16, "mps"
    from backend.devices import cpu_bf16_instructions

    flags = cpu_bf16_instructions()
    if flags:
        return torch.bfloat16, f"cpu with {', '.join(sorted(flags))}"
    return torch.float32, "cpu without bf16 instructions"


def load(entry: Any, device: str, precision: str) -> HypirModel:
    from backend.diffusion import loading

    dev = torch.device(device)
    dtype, why = run_dtype(dev, precision)
    base_path = Path(entry.base)
    base = loading.load(
        SimpleNamespace(name=base_path.stem, path=str(base_path)), torch.device("cpu"),
        torch.float32,
    )  # fmt: skip
    if base.family != hypir_files.BASE_FAMILY:
        raise ModelFormatError(
            f"{base_path.name} is a {base.family} model; HYPIR runs on Stable Diffusion 2.1.",
            f"Put {hypir_files.BASE_FILE} in checkpoints/.",
        )
    parts = base.components
    unet = parts["unet"]
    rank, layers = apply_lora(unet, read_lora(Path(entry.path)), Path(entry.path).name, base_path)
    for name in ("unet", "vae", "text_encoder"):
        if dtype != torch.float32:  # the base loaded in fp32: cast only when needed
            # as a plain module: diffusers' own to() warns about fp32 layers even when a
            # model keeps none (these three keep none)
            torch.nn.Module.to(parts[name], dtype)
        parts[name].eval().requires_grad_(False)
    alpha_bar = float(parts["scheduler"].alphas_cumprod[TIMESTEP])
    log.info("HYPIR: %s with rank-%d LoRA on %d layers, %s", base_path.name, rank, layers, why)
    return HypirModel(
        entry, base_path.stem, unet, parts["vae"], parts["text_encoder"], parts["tokenizer"],
        alpha_bar, dtype, dev, rank, layers, why,
    )  # fmt: skip


def read_lora(path: Path) -> dict[str, torch.Tensor]:
    """The file's LoRA tensors under peft's canonical names, checked as the registry checks."""
    from backend.models.loading import load_state_dict

    tensors = load_state_dict(path)
    found = hypir_files.classify({k: list(v.shape) for k, v in tensors.items()})
    if not found.usable:
        raise ModelFormatError(
            f"{path.name} is not a HYPIR LoRA: {found.reason}.",
            "HYPIR_sd2.pth comes from the HYPIR project (`restora models download hypir-sd2`).",
        )
    return {hypir_files.canonical_key(k) or k: v.float() for k, v in tensors.items()}


def apply_lora(
    unet: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str, base: Path
) -> tuple[int, int]:
    """Inject the LoRA with peft, load its weights, merge them into the UNet and drop the
    LoRA layers; returns (rank, layers adapted). A file that does not fit the base says so."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    layers = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
    known = dict(unet.named_modules())
    absent = [m for m in layers if m not in known]
    if absent:
        raise ModelFormatError(
            f"{name} does not fit {base.name}: {len(absent)} of its {len(layers)} layers are not "
            f"in that UNet (e.g. {absent[0]}).",
            "HYPIR_sd2.pth is made for Stable Diffusion 2.1 base (v2-1_512-ema-pruned).",
        )
    ranks = {m: int(tensors[f"{m}.lora_A.weight"].shape[0]) for m in layers}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    odd = {m: r for m, r in ranks.items() if r != rank}
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=layers, init_lora_weights=False,
        rank_pattern=odd, alpha_pattern=odd,
    )  # fmt: skip
    try:
        inject_adapter_in_model(config, unet, adapter_name=ADAPTER, low_cpu_mem_usage=True)
        result = set_peft_model_state_dict(
            unet, tensors, adapter_name=ADAPTER, low_cpu_mem_usage=True
        )
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        raise ModelFormatError(
            f"{name} does not fit {base.name}: {first[-1][:300] if first else exc}.",
            "HYPIR_sd2.pth is made for Stable Diffusion 2.1 base (v2-1_512-ema-pruned).",
        ) from None
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelFormatError(
            f"{name} does not fit {base.name}: "
            f"{len(result.unexpected_keys)} tensors had no place, {len(missing)} were missing.",
            "",
        )
    _merge(unet)
    return rank, len(layers)


def _merge(unet: torch.nn.Module) -> None:
    """Fold every LoRA layer into its base layer, and put the base layer back in its place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(adapter_names=[ADAPTER])
            parent, _, child = name.rpartition(".")
            setattr(unet.get_submodule(parent) if parent else unet, child, module.get_base_layer())
    if hasattr(unet, "peft_config"):
        del unet.peft_config  # no adapter is left: diffusers must not look for one
