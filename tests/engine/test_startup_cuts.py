"""The start-up cuts in model loading: spandrel is imported without TorchDynamo
(backend.models.spandrel_import), which the CLI never needs; TorchDynamo still imports
normally afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.model_zoo import save_tiny

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_model_loads_without_importing_torchdynamo(tmp_path):
    path = save_tiny("esrgan", tmp_path)
    out = run_python(
        f"""
        import sys
        from pathlib import Path
        from backend.models.loading import load_descriptor
        d = load_descriptor(Path({str(path)!r}))
        print("dynamo", "torch._dynamo" in sys.modules, "extras",
              "spandrel_extra_arches" in sys.modules, d.architecture.id)
        import torch._dynamo, torch
        print("real", hasattr(torch._dynamo, "optimize"), torch._dynamo.__file__ is not None)
        roi_align = sys.modules["torchvision.ops.roi_align"]
        print("forwarded", roi_align.is_compile_supported("cpu"))
        """
    )
    assert "dynamo False extras True ESRGAN" in out
    assert "real True True" in out and "forwarded True" in out


def test_import_falls_back_when_torchdynamo_is_needed():
    """A package that asks the placeholder for more than roi_align does gets the real one."""
    out = run_python(
        """
        import sys
        from backend.models import spandrel_import
        plain = spandrel_import._plain_import
        def needy():
            dynamo = sys.modules.get("torch._dynamo")  # the placeholder, on the first try
            getattr(dynamo, "config", None)  # what a future import might ask of it
            return plain()
        spandrel_import._plain_import = needy
        spandrel = spandrel_import.import_spandrel()
        import torch._dynamo
        print(spandrel.__name__, hasattr(torch._dynamo, "optimize"), len(spandrel.MAIN_REGISTRY))
        """
    )
    name, real, count = out.split()
    assert (name, real) == ("spandrel", "True") and int(count) > 40
