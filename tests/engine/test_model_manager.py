"""The model manager with real random-weight files: keys, byte budgets, pins, shared
components, offload tiers, and memory that is really given back on eviction."""

from __future__ import annotations

import gc
import json
import os
import re
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.errors import OutOfMemoryError
from backend.faces.detect import shared_detector
from backend.model_cache import ModelCache
from backend.models.manager import (
    DetectorEntry,
    FaceDetectorAdapter,
    ModelManager,
    SpandrelAdapter,
    choose_tier,
    default_manager,
    describe,
    register_adapter,
)
from backend.models.manager import adapters as adapters_module
from backend.models.manager.files import stored_float_bytes
from backend.models.manager.memory import megabytes, torch_nbytes
from backend.models.registry import ModelEntry, Registry
from tests.model_zoo import save_tiny

MiB = 1 << 20


class CountingSpandrel(SpandrelAdapter):
    """The real spandrel adapter, recording which entries it loaded."""

    def __init__(self, margin_bytes: int = MiB) -> None:
        super().__init__(margin_bytes)
        self.loads: list[str] = []

    def load(self, entry: Any, device: str, precision: str) -> Any:
        self.loads.append(entry.name)
        return super().load(entry, device, precision)


class FreeMemory:
    """Free bytes the manager is told about (a real machine's would change under the test)."""

    def __init__(self, free: int = 1 << 40) -> None:
        self.free = free

    def __call__(self, _device: str) -> int:
        return self.free


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelEntry]:
    root = tmp_path_factory.mktemp("manager-models")
    for seed, name in enumerate(("a", "b", "c")):
        save_tiny("compact", root, file_name=f"compact-{name}", seed=seed)
    save_tiny("esrgan", root, file_name="esrgan")
    return {e.name: e for e in Registry([root]).entries()}


def weight_bytes(entry: ModelEntry) -> int:
    return sum(t.nbytes for t in load_file(entry.path).values())


def manager(
    adapter: SpandrelAdapter | None = None, free: FreeMemory | None = None, **budgets: int
) -> ModelManager:
    return ModelManager(
        "cpu",
        "fp32",
        free_memory=free or FreeMemory(),
        adapters=[FaceDetectorAdapter(), adapter or CountingSpandrel()],
        **budgets,
    )


def test_a_model_is_loaded_once_and_measured_in_bytes(zoo: dict[str, ModelEntry]) -> None:
    adapter = CountingSpandrel()
    m = manager(adapter)
    a = zoo["compact-a"]
    model = m.get(a)
    assert m.get(a) is model and adapter.loads == ["compact-a"]
    assert model.descriptor.architecture.id == "Compact"
    assert m.loaded_names() == ["compact-a"] and m.is_loaded(a)
    assert not m.is_loaded(zoo["compact-b"])
    usage = m.usage()
    (item,) = usage["items"]
    assert item["bytes"] == weight_bytes(a) == torch_nbytes(model) > 0
    assert item == {"name": "compact-a", "kind": "spandrel", "pool": "host",
                    "bytes": item["bytes"], "pinned": False}  # fmt: skip
    assert usage["used_bytes"] == {"device": 0, "host": item["bytes"]}
    assert usage["budget_bytes"] == {"device": None, "host": None}


def test_the_key_is_the_file_on_disk(tmp_path: Path) -> None:
    path = save_tiny("compact", tmp_path, file_name="swap", seed=1)
    entry = Registry([tmp_path]).find("swap")
    m = manager()
    first = m.get(entry)
    save_tiny("compact", tmp_path, file_name="swap", seed=2)  # same name and size, new weights
    os.utime(path, ns=(1, 1))
    assert not m.is_loaded(entry)
    second = m.get(entry)
    assert second is not first
    assert not torch.equal(
        next(first.descriptor.model.parameters()), next(second.descriptor.model.parameters())
    )


def test_least_recently_used_is_evicted_for_the_budget_and_collected(
    zoo: dict[str, ModelEntry],
) -> None:
    adapter = CountingSpandrel()
    a, b, c = zoo["compact-a"], zoo["compact-b"], zoo["compact-c"]
    need = adapter.estimate(b)
    # room for a load's estimate, not for it beside a loaded model
    m = manager(adapter, host_budget_bytes=weight_bytes(a) + need - 1)
    a_ref = weakref.ref(m.get(a))
    b_ref = weakref.ref(m.get(b))
    assert m.loaded_names() == ["compact-b"]
    assert a_ref() is None  # evicted: nothing keeps it
    m.get(b)
    m.get(c)
    assert m.loaded_names() == ["compact-c"] and b_ref() is None
    assert adapter.loads == ["compact-a", "compact-b", "compact-c"]


def test_free_device_memory_evicts_and_an_impossible_load_fails_first(
    zoo: dict[str, ModelEntry],
) -> None:
    adapter = CountingSpandrel()
    free = FreeMemory()
    m = manager(adapter, free)
    a, b = zoo["compact-a"], zoo["esrgan"]
    m.get(a)
    free.free = adapter.estimate(b) - 1  # what a holds makes it fit: a goes
    m.get(b)
    assert m.loaded_names() == ["esrgan"]
    free.free = 0
    with m.pinned(b), pytest.raises(OutOfMemoryError) as err:
        m.get(a)
    assert adapter.loads == ["compact-a", "esrgan"]  # refused before loading
    assert err.value.message == (
        f"Loading compact-a needs {megabytes(adapter.estimate(a))}; 0.0 MB of memory can be"
        " made available (models in use kept)."
    )
    assert m.loaded_names() == ["esrgan"]


def test_a_pinned_model_is_never_evicted(zoo: dict[str, ModelEntry]) -> None:
    adapter = CountingSpandrel()
    a, b = zoo["compact-a"], zoo["compact-b"]
    budget = weight_bytes(a) + adapter.estimate(b) - 1
    m = manager(adapter, host_budget_bytes=budget)
    model = m.get(a)
    with m.pinned(model), pytest.raises(OutOfMemoryError, match=r"needs 1\.0 MB; 1\.0 MB"):
        m.get(b)
    assert m.loaded_names() == ["compact-a"]
    with m.pinned(a):  # by entry as well as by object
        assert m.unload_all() == 0 and not m.evict(a)
        assert m.usage()["items"][0]["pinned"]
    m.get(b)  # unpinned: a goes
    assert m.loaded_names() == ["compact-b"]


def test_use_pins_each_model_before_the_next_loads(zoo: dict[str, ModelEntry]) -> None:
    a, b, c = zoo["compact-a"], zoo["compact-b"], zoo["compact-c"]
    m = manager()
    m.max_items = 2
    with m.use(a, b) as (ma, mb):
        assert ma.entry.name == "compact-a" and mb.entry.name == "compact-b"
        m.host_budget_bytes = torch_nbytes([ma, mb]) + 1
        with pytest.raises(OutOfMemoryError):  # both pinned, the budget says no
            m.get(c)
        m.host_budget_bytes = None
        m.get(c)  # over the count, but a and b are in use: kept
        assert m.loaded_names() == ["compact-a", "compact-b", "compact-c"]
    m.get(zoo["esrgan"])  # the count evicts again once the job is done
    assert m.loaded_names() == ["compact-c", "esrgan"]


def test_unload_all_keeps_pinned_and_kept_and_releases_the_rest(
    zoo: dict[str, ModelEntry],
) -> None:
    m = manager()
    a, b, c = (m.get(zoo[n]) for n in ("compact-a", "compact-b", "compact-c"))
    refs = [weakref.ref(x) for x in (a, b, c)]
    module_ref = weakref.ref(a.descriptor.model)
    with m.pinned(b):
        assert m.unload_all(keep=[c]) == 1
        assert m.loaded_names() == ["compact-b", "compact-c"]
        assert m.unload_all(keep=c) == 0
    del a, b, c
    gc.collect()
    assert refs[0]() is None and module_ref() is None
    assert m.unload_all() == 2 and m.loaded_names() == [] and m.usage()["items"] == []
    assert all(r() is None for r in refs)


def test_two_tasks_share_one_component(zoo: dict[str, ModelEntry]) -> None:
    m = manager()
    loads: list[str] = []

    def load_vae() -> torch.nn.Module:
        loads.append("vae")
        return torch.nn.Conv2d(4, 3, 3)  # stands in size for an SDXL VAE decoder

    refine = m.component("sdxl-vae", load_vae)  # the refine task's
    with m.pinned(refine):
        tiled = m.component("sdxl-vae", load_vae)  # the tiled refine task's
        assert tiled is refine and loads == ["vae"]
        with m.pinned(tiled):
            assert m.unload_all() == 0
        assert m.unload_all() == 0  # refine still runs
        assert m.usage()["items"][0]["bytes"] == (4 * 3 * 9 + 3) * 4
    vae_ref = weakref.ref(refine)
    del refine, tiled
    assert m.loaded_names() == ["sdxl-vae"]
    assert m.unload_all() == 1 and vae_ref() is None
    m.component("sdxl-vae", load_vae, nbytes=123)
    assert loads == ["vae", "vae"] and m.usage()["items"][0]["bytes"] == 123


def test_offload_tier_thresholds() -> None:
    gib, margin = 1 << 30, 1 << 30
    # resident: the whole model and the margin fit on the device
    assert choose_tier(6 * gib, 7 * gib, 0, 3 * gib, margin) == "resident"
    assert choose_tier(6 * gib, 7 * gib - 1, 16 * gib, 3 * gib, margin) == "model_offload"
    # model offload: the largest component and the margin on the device, the rest in RAM
    assert choose_tier(6 * gib, 4 * gib, 6 * gib, 3 * gib, margin) == "model_offload"
    assert choose_tier(6 * gib, 4 * gib - 1, 6 * gib, 3 * gib, margin) == "sequential_offload"
    # one component: model offload gains nothing over resident
    assert choose_tier(6 * gib, 6 * gib, 16 * gib, margin_bytes=margin) == "sequential_offload"
    with pytest.raises(OutOfMemoryError) as err:
        choose_tier(6 * gib, 8 * gib, 6 * gib - 1, 3 * gib, 4 * gib)
    assert "needs 6,144.0 MB" in err.value.message and "8,192.0 MB free" in err.value.message


def test_the_manager_chooses_a_tier_from_what_it_could_free(
    zoo: dict[str, ModelEntry],
) -> None:
    free = FreeMemory(100 * MiB)
    m = manager(free=free, host_budget_bytes=60 * MiB)
    m.get(zoo["compact-a"])
    assert m.tier(50 * MiB, margin_bytes=10 * MiB) == "resident"  # on a CPU the host is all
    with m.pinned(zoo["compact-a"]), pytest.raises(OutOfMemoryError):
        m.tier(60 * MiB, margin_bytes=0)
    assert m.tier(60 * MiB, margin_bytes=0) == "resident"


def test_file_layouts_on_disk(tmp_path: Path) -> None:
    fp16 = {"w": torch.zeros(64, dtype=torch.float16)}
    save_file(fp16, str(tmp_path / "ckpt.safetensors"))
    save_file({"w": torch.zeros(64)}, str(tmp_path / "vae.safetensors"))
    (tmp_path / "clip.bin").write_bytes(b"\0" * 100)
    (tmp_path / "flux.gguf").write_bytes(b"GGUF" + b"\0" * 60)

    one = describe(tmp_path / "ckpt.safetensors")
    assert one.layout == "single_file" and [r for r, _ in one.parts] == ["model"]
    parts = describe(
        tmp_path / "ckpt.safetensors", vae=tmp_path / "vae.safetensors",
        text_encoders=[tmp_path / "clip.bin"],
    )  # fmt: skip
    assert parts.layout == "checkpoint_with_parts"
    assert parts.file("vae") == str(tmp_path / "vae.safetensors")
    assert parts.part_bytes()["text_encoder_0"] == 100
    gguf = describe(tmp_path / "flux.gguf", vae=tmp_path / "vae.safetensors")
    assert gguf.layout == "gguf" and [r for r, _ in gguf.parts] == ["transformer", "vae"]
    assert stored_float_bytes(tmp_path / "ckpt.safetensors") == 2
    assert stored_float_bytes(tmp_path / "vae.safetensors") == 4
    assert stored_float_bytes(tmp_path / "clip.bin") is None

    pipe = tmp_path / "sdxl"
    for component, files in (("unet", 2), ("vae", 1), ("text_encoder", 1)):
        (pipe / component).mkdir(parents=True)
        for i in range(files):
            save_file({"w": torch.zeros(32 * (i + 1))}, str(pipe / component / f"m{i}.safetensors"))
        (pipe / component / "legacy.bin").write_bytes(b"\0" * 999)  # not read: safetensors is
    (pipe / "model_index.json").write_text(
        json.dumps({"_class_name": "X", "unet": [], "vae": [], "text_encoder": []})
    )
    folder = describe(pipe)
    assert folder.layout == "diffusers_folder"
    sizes = folder.part_bytes()
    assert (
        set(sizes) == {"unet", "vae", "text_encoder"} and folder.largest_part_bytes == sizes["unet"]
    )
    assert folder.total_bytes == sum(sizes.values())
    with pytest.raises(ValueError, match=r"model_index\.json"):
        describe(tmp_path)


def test_estimate_grows_16_bit_files_to_fp32(tmp_path: Path) -> None:
    save_tiny("compact", tmp_path, file_name="f32")
    state = load_file(str(tmp_path / "upscale_models" / "f32.safetensors"))
    save_file(
        {k: v.half() for k, v in state.items()}, str(tmp_path / "upscale_models/f16.safetensors")
    )
    registry = Registry([tmp_path])
    f32, f16 = registry.find("f32"), registry.find("f16")
    adapter = SpandrelAdapter(margin_bytes=0)
    assert adapter.estimate(f32) == f32.size_bytes
    assert adapter.estimate(f16) == 2 * f16.size_bytes


def test_a_registered_adapter_loads_a_new_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_file({"w": torch.ones(256)}, str(tmp_path / "ckpt.safetensors"))
    save_file({"w": torch.ones(64)}, str(tmp_path / "vae.safetensors"))

    class TensorsAdapter:
        """A checkpoint with separate parts, loaded as one dict of state dicts per role."""

        kind = "tensors"

        def accepts(self, entry: Any) -> bool:
            return getattr(entry, "layout", "") == "checkpoint_with_parts"

        def files(self, entry: Any) -> Any:
            return entry

        def name(self, entry: Any) -> str:
            return Path(entry.root).stem

        def estimate(self, entry: Any) -> int:
            return entry.total_bytes

        def load(self, entry: Any, device: str, precision: str) -> Any:
            return {role: load_file(stamp.path, device=device) for role, stamp in entry.parts}

        def nbytes(self, obj: Any) -> int:
            return torch_nbytes(obj)

        def release(self, obj: Any) -> None:
            obj.clear()

    monkeypatch.setattr(adapters_module, "_registered", [])
    register_adapter(TensorsAdapter)
    m = ModelManager("cpu", "fp32", free_memory=FreeMemory())
    entry = describe(tmp_path / "ckpt.safetensors", vae=tmp_path / "vae.safetensors")
    loaded = m.get(entry)
    assert set(loaded) == {"model", "vae"} and m.is_loaded(entry)
    assert m.usage()["items"][0] == {"name": "ckpt", "kind": "tensors", "pool": "host",
                                     "bytes": (256 + 64) * 4, "pinned": False}  # fmt: skip
    assert m.unload_all() == 1 and loaded == {}  # the adapter's release ran


def test_the_face_detector_lives_in_the_manager() -> None:
    m = manager()
    detector = m.detector("cpu")
    assert m.detector("cpu") is detector and m.loaded_names() == ["face-detector"]
    assert m.is_loaded(DetectorEntry.find())
    (item,) = m.usage()["items"]
    assert item["kind"] == "face_detector" and item["bytes"] == torch_nbytes(detector.models)
    ref = weakref.ref(detector)
    del detector
    assert m.unload_all() == 1 and ref() is None
    assert shared_detector("cpu") is default_manager().detector("cpu")


def test_model_cache_is_the_manager_with_a_count(zoo: dict[str, ModelEntry]) -> None:
    c = ModelCache("cpu", "fp32", 2, free_memory=FreeMemory())
    assert isinstance(c, ModelManager)
    a, b, d = zoo["compact-a"], zoo["compact-b"], zoo["esrgan"]
    keep = c.get(a)
    c.get(b)
    c.get(a)
    c.get(d)
    assert c.loaded_names() == ["compact-a", "esrgan"]
    assert c.unload_all(keep=keep) == 1 and c.loaded_names() == ["compact-a"]
    assert re.fullmatch(r"[\d.]+ MB", megabytes(c.usage()["items"][0]["bytes"]))
