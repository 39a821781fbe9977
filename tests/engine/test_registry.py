"""The registry lists every model file, loads each family through spandrel, and never runs
code from a model file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from backend.errors import ModelFormatError, ModelNotFoundError
from backend.models.loading import load_descriptor, load_state_dict
from backend.models.registry import Registry
from tests.model_zoo import TINY_MODELS, save_tiny


@pytest.mark.parametrize("key", sorted(TINY_MODELS))
def test_each_family_round_trips_through_the_loader(key: str, models_root: Path) -> None:
    spec = TINY_MODELS[key]
    path = save_tiny(key, models_root)
    entry = Registry([models_root]).find(path.stem)
    assert entry.usable and entry.architecture
    assert entry.scale == spec.scale
    assert "fp32" in entry.dtypes
    descriptor = load_descriptor(Path(entry.path))
    assert descriptor.architecture.id == spec.family


def test_pth_checkpoint_loads_with_weights_only(models_root: Path) -> None:
    path = save_tiny("compact", models_root, fmt="pth")
    entry = Registry([models_root]).find("tiny-compact")
    assert entry.usable and Path(entry.path) == path and entry.scale == 4


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/restora-pwned",))


def test_pickle_that_runs_code_is_refused(models_root: Path, tmp_path: Path) -> None:
    marker = Path("/tmp/restora-pwned")
    marker.unlink(missing_ok=True)
    evil = models_root / "upscale_models" / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": _Exploit()}))
    with pytest.raises(ModelFormatError, match=r"refused|not a PyTorch"):
        load_state_dict(evil)
    entries = {e.name: e for e in Registry([models_root]).entries()}
    assert not entries["evil"].usable
    assert not marker.exists()


def test_non_models_are_listed_as_unusable(models_root: Path) -> None:
    up = models_root / "upscale_models"
    (up / "notes.pth").write_text("this is a text file, not weights")
    (up / "empty.safetensors").write_bytes(b"")
    (up / "garbage.ckpt").write_bytes(b"\x00\x01garbage" * 100)
    (up / "custom.param").write_text("7767517\n1 1\nInput data 0 1 data\n")
    save_tiny("compact", models_root)
    entries = {e.name: e for e in Registry([models_root]).entries()}
    assert entries["tiny-compact"].usable
    for name in ("notes", "empty", "garbage", "custom"):
        assert not entries[name].usable and entries[name].reason, name
    assert "import-ncnn" in entries["custom"].reason
    with pytest.raises(ModelFormatError, match="cannot be used"):
        Registry([models_root]).find("notes")


def test_unknown_model_names_the_choices(models_root: Path) -> None:
    save_tiny("compact", models_root)
    with pytest.raises(ModelNotFoundError, match="tiny-compact"):
        Registry([models_root]).find("no-such-model")
    with pytest.raises(ModelNotFoundError):
        Registry([models_root]).find("../../etc/passwd")


def test_comfyui_and_a1111_layouts_and_duplicate_names(tmp_path: Path) -> None:
    comfy, a1111 = tmp_path / "comfy", tmp_path / "a1111"
    save_tiny("compact", comfy, file_name="shared-name")
    (a1111 / "ESRGAN").mkdir(parents=True)
    src = save_tiny("span", tmp_path / "scratch", file_name="shared-name")
    src.rename(a1111 / "ESRGAN" / src.name)
    entries = Registry([comfy, a1111]).entries()
    names = sorted(e.name for e in entries)
    assert names == ["shared-name", "upscale_models/shared-name.safetensors"]
    assert {e.architecture for e in entries} == {"RealESRGAN Compact", "SPAN"}


def test_listing_is_cached_by_size_and_mtime(models_root: Path) -> None:
    path = save_tiny("compact", models_root)
    reg = Registry([models_root])
    first = reg.entries()[0]
    again = Registry([models_root]).entries()[0]
    assert again == first
    path.write_text("replaced by something else")
    assert not Registry([models_root]).entries()[0].usable
