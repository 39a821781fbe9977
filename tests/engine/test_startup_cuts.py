"""The start-up cuts in model loading keep every model's output exactly as it was.

* spandrel is imported without TorchDynamo (backend.models.spandrel_import), which the CLI
  never needs; TorchDynamo still imports normally afterwards.
* A network is built without random initialisation, since the file's weights replace every
  value (backend.models.loading._without_random_init), and small .safetensors files are
  read in one go.

Each network of the tiny zoo gives bit-identical output through Restora's loader and through
spandrel's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spandrel
import torch

from backend.models import loading
from tests.model_zoo import TINY_MODELS, save_tiny

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


@pytest.mark.parametrize("key", sorted(TINY_MODELS))
def test_loader_output_is_bit_identical_to_spandrel(key, tmp_path, monkeypatch):
    monkeypatch.setattr(loading.threading, "active_count", lambda: 1)  # as in the CLI
    path = save_tiny(key, tmp_path)
    ours = loading.load_descriptor(path)
    theirs = spandrel.ModelLoader().load_from_file(path)
    req = theirs.size_requirements
    side = max(32, req.minimum) // req.multiple_of * req.multiple_of or req.multiple_of
    x = torch.rand(1, theirs.input_channels, side, side, generator=torch.Generator().manual_seed(1))
    ours.model.eval()
    theirs.model.eval()
    with torch.inference_mode():  # (a copy each: some networks change their input in place)
        assert torch.equal(ours(x.clone()), theirs(x.clone())), key


def test_no_random_initialisation_while_building(tmp_path, monkeypatch):
    monkeypatch.setattr(loading.threading, "active_count", lambda: 1)
    calls = []
    original = torch.nn.init.kaiming_uniform_

    def counting(tensor, *args, **kwargs):
        calls.append(tensor.shape)
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", counting)
    path = save_tiny("compact", tmp_path)
    calls.clear()  # building the network to save it initialised it, of course
    loading.load_descriptor(path)
    assert calls == []
    assert torch.nn.init.kaiming_uniform_ is counting  # put back afterwards
    torch.nn.Conv2d(3, 3, 3)
    assert len(calls) == 1


def test_other_threads_keep_random_initialisation(tmp_path, monkeypatch):
    """With other threads about (the server), networks are built the plain way."""
    monkeypatch.setattr(loading.threading, "active_count", lambda: 3)
    seen = []
    original = torch.nn.init.kaiming_uniform_
    monkeypatch.setattr(
        torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: seen.append(1) or original(t, *a, **k)
    )
    path = save_tiny("compact", tmp_path)
    seen.clear()
    loading.load_descriptor(path)
    assert seen
