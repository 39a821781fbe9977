"""Where Restora keeps models, caches and settings on each platform.

Resolved on demand (never at import) so tests and the CLI can point them elsewhere
through environment variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "restora"

#: Sub-folders of a models folder, named as ComfyUI names them so one folder serves both.
MODEL_FOLDERS: dict[str, str] = {
    "upscale_models": "super-resolution and restoration models (spandrel)",
    "facerestore_models": "face restoration models (GFPGAN, CodeFormer, RestoreFormer)",
    "checkpoints": "diffusion checkpoints",
    "diffusion_models": "diffusion transformers and UNets",
    "loras": "LoRA weights",
    "vae": "VAE weights",
    "controlnet": "ControlNet models (tile) for the diffusion tasks",
    "text_encoders": "text encoders",
    "inpaint": "inpainting models (LaMa, MAT)",
    "colorization": "colorization models (DDColor)",
    "facedetection": "face detectors (YuNet, ...)",
    "HYPIR": "HYPIR restoration LoRAs (HYPIR_sd2.pth), run on an SD 2.1 base",
}
#: Folders whose files spandrel can load; the rest are listed by name and size only.
SPANDREL_FOLDERS = ("upscale_models", "facerestore_models", "inpaint", "colorization")
#: Folders of diffusion files, described from their headers (backend.diffusion.families).
DIFFUSION_FOLDERS = ("checkpoints", "diffusion_models", "vae", "loras", "HYPIR", "controlnet")
#: HYPIR's LoRA files, where ComfyUI's HYPIR nodes keep them (models/HYPIR/HYPIR_sd2.pth)
HYPIR_FOLDER = "HYPIR"
#: A1111 / Forge names for the same folders, so their model trees are found too.
FOLDER_ALIASES: dict[str, str] = {
    "ESRGAN": "upscale_models",
    "RealESRGAN": "upscale_models",
    "SwinIR": "upscale_models",
    "GFPGAN": "facerestore_models",
    "Codeformer": "facerestore_models",
    "Stable-diffusion": "checkpoints",
    "Lora": "loras",
    "VAE": "vae",
    "hypir": "HYPIR",
    "ControlNet": "controlnet",
}


def _platform_dir(kind: str) -> Path:
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA" if kind == "cache" else "APPDATA")
        return Path(base) / APP if base else home / "AppData" / APP
    if sys.platform == "darwin":
        sub = "Caches" if kind == "cache" else "Application Support"
        return home / "Library" / sub / APP
    env = {"data": "XDG_DATA_HOME", "cache": "XDG_CACHE_HOME", "config": "XDG_CONFIG_HOME"}[kind]
    default = {"data": ".local/share", "cache": ".cache", "config": ".config"}[kind]
    return Path(os.environ.get(env) or home / default) / APP


def data_dir() -> Path:
    return Path(os.environ.get("RESTORA_HOME") or _platform_dir("data"))


def cache_dir() -> Path:
    override = os.environ.get("RESTORA_HOME")
    return Path(override) / "cache" if override else _platform_dir("cache")


def config_dir() -> Path:
    override = os.environ.get("RESTORA_HOME")
    return Path(override) / "config" if override else _platform_dir("config")


def default_models_dir() -> Path:
    return data_dir() / "models"


def models_dirs(extra: list[str] | None = None) -> list[Path]:
    """The models folders in search order: explicit ones, RESTORA_MODELS, then the default.

    The default folder always comes last so set-up's imported models are found even when a
    user adds a ComfyUI or A1111 folder.
    """
    dirs: list[Path] = [Path(d).expanduser() for d in (extra or [])]
    env = os.environ.get("RESTORA_MODELS", "")
    dirs += [Path(d).expanduser() for d in env.split(os.pathsep) if d]
    dirs.append(default_models_dir())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique
