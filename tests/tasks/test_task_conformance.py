"""Every product task passes the task conformance suite (tests/task_conformance.py), each with
a tiny random-weight model of its own saved in the users' folder layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from backend.tasks import (
    colorize,
    defects,
    denoise,
    edit,
    face_restore,
    hypir,
    inpaint,
    refine,
    restore_old_photo,
    tiled_refine,
    upscale,
)
from backend.tasks.context import TaskContext
from backend.tasks.registry import default_registry
from backend.tasks.spec import Preset
from tests.model_zoo import save_tiny
from tests.task_conformance import TaskConformance


def test_every_product_task_is_checked_here() -> None:
    checked = {c.spec.id for c in TaskConformance.__subclasses__() if c.__module__ == __name__}
    assert checked == set(default_registry().ids())


@pytest.mark.parametrize(
    ("preset", "complaint"),
    [
        (Preset("odd", "Odd", params={"colour": 1}), "not a parameter"),
        (Preset("big", "Big", params={"scale": 99.0}), "between 0.05 and 16x"),
        (Preset("word", "Word", params={"alpha": "paint"}), "must be one of"),
        (Preset("internal", "Internal", params={"max_output_pixels": 1}), "not a parameter"),
        (Preset("Bad Name", "Bad"), "lowercase words"),
        (Preset("shiny", "Shiny", model_traits=("shiny",)), "unknown model traits"),
    ],
)
def test_a_bad_preset_is_refused_when_the_task_is_defined(preset: Preset, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        dataclasses.replace(upscale.SPEC, presets=(preset,))
    with pytest.raises(ValueError, match="share a name"):
        dataclasses.replace(upscale.SPEC, presets=upscale.SPEC.presets[:1] * 2)
    with pytest.raises(ValueError, match="runs none"):
        dataclasses.replace(
            defects.SPEC, presets=(Preset("photo", "Photo", model_traits=("photo",)),)
        )


class TestUpscale(TaskConformance):
    spec = upscale.SPEC
    module = "backend.tasks.upscale"
    run_params: ClassVar[dict[str, Any]] = {"tile": 16, "overlap": 4}

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("conformance-upscale")
        save_tiny("compact", root)
        return root

    @pytest.fixture(scope="class")
    @classmethod
    def sample(cls, face_crop: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(face_crop[:32, :24])


class TestDenoise(TaskConformance):
    spec = denoise.SPEC
    module = "backend.tasks.denoise"
    run_params: ClassVar[dict[str, Any]] = {"tile": 16, "overlap": 4}

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("conformance-denoise")
        save_tiny("dncnn", root)
        return root


class TestFaceRestore(TaskConformance):
    spec = face_restore.SPEC
    module = "backend.tasks.face_restore"

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        import shutil

        root = tmp_path_factory.mktemp("conformance-faces")
        (root / "facerestore_models").mkdir()
        src = face_models / "facerestore_models" / "random-restoreformer.safetensors"
        shutil.copy(src, root / "facerestore_models" / src.name)
        return root

    @pytest.fixture(scope="class")
    @classmethod
    def sample(cls, astronaut: np.ndarray) -> np.ndarray:
        """A face to restore: the astronaut at a quarter of her size (the face ~50 px)."""
        return np.ascontiguousarray(astronaut[::4, ::4])

    def expected_channels(self, channels: int) -> int:
        return channels + (channels in (1, 3))  # a layer of the faces alone adds alpha


def _copy_models(src: Path, dst: Path, *files: str) -> Path:
    import shutil

    for name in files:
        (dst / Path(name).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, dst / name)
    return dst


class TestDefects(TaskConformance):
    spec = defects.SPEC
    module = "backend.tasks.defects"


class TestColorize(TaskConformance):
    spec = colorize.SPEC
    module = "backend.tasks.colorize"

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, old_photo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("conformance-colorize")
        return _copy_models(old_photo_models, root, "colorization/random-ddcolor.safetensors")

    def expected_channels(self, channels: int) -> int:
        return channels + 2 * (channels in (1, 2))  # gray becomes RGB; alpha is kept


class TestInpaint(TaskConformance):
    spec = inpaint.SPEC
    module = "backend.tasks.inpaint"

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, old_photo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("conformance-inpaint")
        return _copy_models(old_photo_models, root, "inpaint/random-lama.safetensors")

    def run(self, models_dir, store, pixels, mask=None, ctx=None):  # type: ignore[no-untyped-def]
        if mask is None:  # inpainting always has holes: a square in the middle by default
            h, w = pixels.shape[:2]
            mask = np.zeros((h, w, 1), np.uint8)
            mask[h // 3 : h // 2, w // 3 : w // 2] = 255
        return super().run(models_dir, store, pixels, mask, ctx)

    def expected_channels(self, channels: int) -> int:
        return channels + (channels in (1, 3))  # the holes as a layer over the input


class TestRestoreOldPhoto(TaskConformance):
    """The chain with a denoise and an upscale model installed: the other model stages are
    skipped (and say so), the defects stage needs none."""

    spec = restore_old_photo.SPEC
    module = "backend.tasks.restore_old_photo"

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("conformance-chain")
        save_tiny("dncnn", root)
        save_tiny("compact", root)
        return root

    def run(self, models_dir, store, pixels, mask=None, ctx=None, params=None):  # type: ignore[no-untyped-def]
        from backend.models.registry import Registry

        ctx = ctx or TaskContext()
        ctx.registry = Registry([models_dir])
        return super().run(None, store, pixels, mask, ctx, params)


class TestRefine(TaskConformance):
    spec = refine.SPEC
    module = "backend.tasks.refine"
    run_params: ClassVar[dict[str, Any]] = {"steps": 2, "seed": 3}

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from tests.diffusion_zoo import sd15_checkpoint

        root = tmp_path_factory.mktemp("conformance-refine")
        sd15_checkpoint(root)
        return root


class TestTiledRefine(TaskConformance):
    spec = tiled_refine.SPEC
    module = "backend.tasks.tiled_refine"
    run_params: ClassVar[dict[str, Any]] = {"steps": 2, "seed": 3, "scale": 1.5}

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from tests.diffusion_zoo import sd15_checkpoint

        root = tmp_path_factory.mktemp("conformance-tiled-refine")
        sd15_checkpoint(root)
        return root


class TestEdit(TaskConformance):
    """On Qwen-Image-Edit-2509 in ComfyUI's split files (the quickest to build), at a 64 px
    working size; the vision-language encoder sees 56x56 pictures instead of 384x384."""

    spec = edit.SPEC
    module = "backend.tasks.edit"
    run_params: ClassVar[dict[str, Any]] = {"steps": 2, "seed": 3, "working_size": 64}

    @pytest.fixture(autouse=True)
    def small_condition_images(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from backend.diffusion import edit_run

        monkeypatch.setattr(edit_run, "CONDITION_AREA", 56 * 56)

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from tests.edit_zoo import qwen_split_files

        root = tmp_path_factory.mktemp("conformance-edit")
        qwen_split_files(root)
        return root

    def expected_channels(self, channels: int) -> int:
        return channels + 2 * (channels in (1, 2))  # an edit is in colour; alpha is kept


class TestHypir(TaskConformance):
    spec = hypir.SPEC
    module = "backend.tasks.hypir"
    run_params: ClassVar[dict[str, Any]] = {"tile": 64, "stride": 32}

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from tests.diffusion_zoo import hypir_models

        return hypir_models(tmp_path_factory.mktemp("conformance-hypir"))
