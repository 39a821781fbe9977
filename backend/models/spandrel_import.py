"""Importing spandrel without paying for TorchDynamo.

``import spandrel`` registers every architecture. LaMa's module imports torchvision, and
importing torchvision runs ``torchvision.ops.roi_align``, whose one use of TorchDynamo is
``from torch._dynamo.utils import is_compile_supported``, called only when roi_align itself
runs (no spandrel model calls it). That line imports all of ``torch._dynamo`` (with sympy,
triton, torch.fx's symbolic shapes and torch.distributed's FSDP): measured on this project's
2-core machine (shared with other work at the time), 1.8 s of the 2.4 s that ``import
spandrel`` takes after torch, about as long as importing torch itself, on every CLI run that
loads a model.

So, while spandrel is imported, ``torch._dynamo`` and ``torch._dynamo.utils`` are
placeholders whose ``is_compile_supported`` imports the real function when first called.
Then the placeholders leave ``sys.modules``, and a later ``import torch._dynamo``
(torch.compile, the diffusion packages) gets the real package as usual. If anything asks
the placeholders for anything else (a future torchvision), the import is redone the plain
way. Only a process with a single thread does this, since other threads could import
through the placeholders in the meantime (the server loads models in worker threads and
imports spandrel the plain way).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

_DYNAMO = "torch._dynamo"
_UTILS = "torch._dynamo.utils"


class _Placeholder(types.ModuleType):
    """A stand-in module that notes every attribute asked of it that it lacks."""

    def __init__(self, name: str, misses: list[str]) -> None:
        super().__init__(name)
        self._misses = misses

    def __getattr__(self, attr: str) -> Any:
        if not (attr.startswith("__") and attr.endswith("__")):  # import machinery probes
            self._misses.append(f"{self.__name__}.{attr}")
        raise AttributeError(attr)


def _is_compile_supported(device_type: Any) -> Any:
    """What roi_align calls: the real function, imported on first use."""
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def import_spandrel() -> types.ModuleType:
    """``import spandrel``, and spandrel_extra_arches where installed, without TorchDynamo."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if _DYNAMO in sys.modules or threading.active_count() > 1:
        return _plain_import()
    import torch  # the real torch first: only its _dynamo is replaced

    misses: list[str] = []
    package, utils = _Placeholder(_DYNAMO, misses), _Placeholder(_UTILS, misses)
    package.__path__ = []
    package.utils = utils
    utils.is_compile_supported = _is_compile_supported
    before = set(sys.modules)
    sys.modules[_DYNAMO], sys.modules[_UTILS] = package, utils
    failed = False
    try:
        _plain_import()
    except (ImportError, AttributeError):
        failed = True
    finally:
        for name, placeholder in ((_UTILS, utils), (_DYNAMO, package)):
            if sys.modules.get(name) is placeholder:
                del sys.modules[name]
        if vars(torch).get("_dynamo") is package:
            delattr(torch, "_dynamo")
    if failed or misses:
        # something needed the real TorchDynamo: forget what this attempt imported, redo it
        for name in set(sys.modules) - before:
            del sys.modules[name]
        return _plain_import()
    return sys.modules["spandrel"]


def _plain_import() -> types.ModuleType:
    import spandrel

    # (an ImportError from inside the extras must surface, so look for the package first)
    if importlib.util.find_spec("spandrel_extra_arches") is not None:
        import spandrel_extra_arches  # noqa: F401  (imports torchvision too)
    return spandrel
