"""Loading model files safely: no pickled code ever runs.

.safetensors files hold tensors only. .pth/.ckpt/.pt files are pickles; they are opened with
PyTorch's weights-only unpickler, which refuses any global that is not a tensor type, so a
file crafted to run code fails with a clear error instead of running it. TorchScript archives
(code by nature) are refused.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.errors import ModelFormatError

MODEL_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt")
#: .safetensors files up to this size are read whole, larger ones mapped: reading costs a
#: transient copy of the file in memory, mapping only the pages' first touch
READ_WHOLE_BELOW = 256 * 1024 * 1024


def load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    ext = path.suffix.lower()
    if ext not in MODEL_EXTENSIONS:
        raise ModelFormatError(
            f"{path.name}: '{ext}' is not a model file extension.",
            f"Use one of {', '.join(MODEL_EXTENSIONS)}.",
        )
    if ext == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load, load_file

        try:
            if path.stat().st_size <= READ_WHOLE_BELOW:
                # one sequential read: mapping the file instead makes the weight copy fault
                # in every page one by one (x4plus on a 2-core VM: 0.63 -> 0.48 s to load)
                return load(path.read_bytes())
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFormatError(
                f"{path.name} is not a valid safetensors file ({exc}).", "Download the file again."
            ) from None
    if _is_torchscript(path):
        raise ModelFormatError(
            f"{path.name} is a TorchScript archive, which contains code.",
            "Use a .pth or .safetensors state dict of the same model.",
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        found = _refused_global(exc)
        raise ModelFormatError(
            f"{path.name} was refused: besides weights, this pickle asks to create "
            f"{found}. Opening such a file could run code hidden in it, so Restora opens "
            "only pickles that hold nothing but tensors.",
            "Use a .safetensors version of the model (most model pages offer one), or convert "
            "the file to .safetensors with a tool you trust.",
        ) from None
    except Exception as exc:  # garbage bytes make the unpickler raise almost anything
        raise ModelFormatError(
            f"{path.name} is not a PyTorch model file ({_short(exc)}).",
            "Check that the download completed.",
        ) from None
    return _unwrap(obj, path)


def _refused_global(exc: BaseException) -> str:
    """What PyTorch's weights-only unpickler refused, in words (not its advice)."""
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"a Python object '{match.group(1)}'" if match else "Python objects that are not tensors"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _is_torchscript(path: Path) -> bool:
    if not _is_zip(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/code/") or "/code/" in n for n in z.namelist()[:200])
    except zipfile.BadZipFile:
        return False


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    """Checkpoints nest the weights under 'params_ema', 'state_dict', ... : take the tensors."""
    import torch

    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("params_ema", "params", "state_dict", "model", "net_g", "g_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        else:
            break
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise ModelFormatError(f"{path.name} holds no model weights.", "Is it a model file?")


def load_descriptor(path: Path) -> Any:
    """Load a file through spandrel (with the extra architectures registered)."""
    install_extra_architectures()
    from spandrel import ModelLoader, UnsupportedModelError

    state_dict = load_state_dict(path)
    try:
        from spandrel import canonicalize_state_dict

        state_dict = canonicalize_state_dict(state_dict)
        with _without_random_init():
            descriptor = ModelLoader().load_from_state_dict(state_dict)
        fuse_reparameterised(descriptor.model)
        return descriptor
    except UnsupportedModelError:
        raise ModelFormatError(
            f"{path.name}: no supported architecture matches its weights.",
            "See `restora models list` for what is supported.",
        ) from None
    except Exception as exc:  # architecture detection on foreign weights can fail anywhere
        raise ModelFormatError(
            f"{path.name}: the weights do not load ({_short(exc)}).",
            "The file may be damaged or of an unsupported variant.",
        ) from None


@contextlib.contextmanager
def _without_random_init() -> Iterator[None]:
    """Build a network without filling its weights with random numbers first.

    spandrel builds the network (each layer initialises its weights randomly: a pass over
    every weight) and then copies the file's weights over them all, strictly: a file that
    misses any parameter or persistent buffer fails to load, so none of the random values
    survives. torch.nn.init's functions are therefore no-ops while the network is built.
    Not in a process with several threads (the server), where another thread could be
    building a network whose weights it does not load afterwards.
    """
    if threading.active_count() > 1:
        yield
        return
    import torch.nn.init as init

    saved = {
        name: fn
        for name, fn in vars(init).items()
        if name.endswith("_") and not name.startswith("_") and callable(fn)
    }
    for name in saved:
        setattr(init, name, _leave_as_is)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def _leave_as_is(tensor: Any, *_args: Any, **_kwargs: Any) -> Any:
    return tensor


def fuse_reparameterised(model: Any) -> None:
    """Fuse re-parameterisable convolutions once, instead of before every forward pass.

    spandrel's SPAN keeps each Conv3XC in its training form (1x1 -> 3x3 -> 1x1 plus a 1x1
    skip) and, in eval mode, recomputes the equivalent single 3x3 ``eval_conv`` from those
    branches on every call: per tile, a pass over all the weights that costs more than the
    tile itself on a CPU in bf16 (measured: 128x128 tile of ClearReality4x 4.6 s -> 1.4 s).
    The weights never change after loading, so the fused kernel is computed here, in fp32
    before any cast, and the per-call recomputation is switched off for this instance.
    """
    import torch

    for module in model.modules():
        update = getattr(module, "update_params", None)
        if callable(update) and isinstance(getattr(module, "eval_conv", None), torch.nn.Conv2d):
            with torch.no_grad():
                update()
            module.update_params = _already_fused


def _already_fused() -> None:
    """Stands in for Conv3XC.update_params once the fused kernel is in place."""


_extras_installed = False


def install_extra_architectures() -> None:
    global _extras_installed
    if _extras_installed:
        return
    from backend.models.spandrel_import import import_spandrel

    import_spandrel()  # the first import of spandrel decides what it costs: see there
    from spandrel import MAIN_REGISTRY

    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        EXTRA_REGISTRY = None
    if EXTRA_REGISTRY is not None:
        MAIN_REGISTRY.add(*EXTRA_REGISTRY)
    _extras_installed = True
