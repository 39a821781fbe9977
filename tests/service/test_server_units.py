"""The server's parts without a server: model cache, result store, image store, event hub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from backend.api.event_hub import EventHub
from backend.api.image_store import ImageNotFoundError, ImageStore
from backend.errors import OutOfMemoryError
from backend.model_cache import ModelCache
from backend.results import ResultStore
from shared.protocol import EventType, JobState, JobStatus


@dataclass
class FakeEntry:
    name: str
    path: str = ""
    size_bytes: int = 1000

    def __post_init__(self) -> None:
        self.path = self.path or f"/models/{self.name}.safetensors"


@dataclass
class FakeModel:
    entry: FakeEntry
    device: str = "cpu"
    precision: str = "fp32"


class FakeMemory:
    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, _device: str) -> int:
        return self.free


def cache(free: int = 10**12, max_models: int = 3, loader=None) -> ModelCache:
    return ModelCache(
        "cpu",
        "auto",
        max_models,
        loader=loader or (lambda e, d, p: FakeModel(e)),
        free_memory=FakeMemory(free),
    )


def test_a_loaded_model_is_kept_for_the_next_job() -> None:
    loads: list[str] = []

    def loader(entry, _d, _p):
        loads.append(entry.name)
        return FakeModel(entry)

    c = cache(loader=loader)
    a = FakeEntry("a")
    assert c.get(a) is c.get(a) and loads == ["a"]
    assert c.loaded_names() == ["a"] and c.is_loaded(a)


def test_least_recently_used_goes_first_when_full() -> None:
    c = cache(max_models=2)
    a, b, d = FakeEntry("a"), FakeEntry("b"), FakeEntry("d")
    c.get(a)
    c.get(b)
    c.get(a)  # a is now the most recent
    c.get(d)
    assert c.loaded_names() == ["a", "d"]


def test_models_are_unloaded_when_memory_is_short() -> None:
    memory = FakeMemory(10**12)
    c = ModelCache("cpu", "auto", 5, loader=lambda e, d, p: FakeModel(e), free_memory=memory)
    c.get(FakeEntry("a"))
    c.get(FakeEntry("b"))
    memory.free = 0  # nothing free: everything loaded goes before a new load
    c.get(FakeEntry("c"))
    assert c.loaded_names() == ["c"]


def test_out_of_memory_while_loading_unloads_all_and_retries() -> None:
    attempts: list[str] = []

    def loader(entry, _d, _p):
        attempts.append(entry.name)
        if entry.name == "big" and attempts.count("big") == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        if entry.name == "huge":
            raise RuntimeError("CUDA out of memory. Tried to allocate 80 GiB")
        return FakeModel(entry)

    c = cache(loader=loader)
    c.get(FakeEntry("small"))
    c.get(FakeEntry("big"))
    assert c.loaded_names() == ["big"] and attempts == ["small", "big", "big"]
    with pytest.raises(OutOfMemoryError, match="huge"):
        c.get(FakeEntry("huge"))
    with pytest.raises(RuntimeError, match="other"):
        cache(loader=lambda e, d, p: (_ for _ in ()).throw(RuntimeError("other"))).get(
            FakeEntry("x")
        )


def test_unload_all_keeps_the_running_model() -> None:
    c = cache()
    keep = c.get(FakeEntry("a"))
    c.get(FakeEntry("b"))
    assert c.unload_all(keep=keep) == 1 and c.loaded_names() == ["a"]


def test_result_store_drops_fetched_results_first_then_spills(tmp_path) -> None:
    store = ResultStore(memory_limit=250, spill_dir=str(tmp_path))
    a, b, c = (np.full((10, 10, 1), v, np.uint8) for v in (1, 2, 3))
    store.put("a", {"result": a})
    store.put("b", {"result": b})
    assert store.get("a", "result") is a  # fetched: the first to go
    assert store.put("c", {"result": c}) == ["a"]
    assert store.get("a", "result") is None and store.memory_bytes() == 200
    store.put("d", {"result": np.full((10, 10, 1), 4, np.uint8)})  # nothing fetched: b spills
    assert store.memory_bytes() == 200
    np.testing.assert_array_equal(store.get("b", "result"), b)
    assert list(tmp_path.glob("*/b-0.npy"))
    store.drop("b")
    assert not list(tmp_path.glob("*/b-*.npy"))
    store.close()
    assert not list(tmp_path.iterdir())


def test_result_store_keeps_every_named_output_of_a_job(tmp_path) -> None:
    store = ResultStore(memory_limit=150, spill_dir=str(tmp_path))
    one, two = np.full((10, 10, 1), 1, np.uint8), np.full((5, 5, 2), 2, np.uint8)
    store.put("j", {"bright": one, "inverse": two})
    assert store.get("j", "bright") is one and store.get("j", "inverse") is two
    store.put("k", {"result": np.zeros((10, 10, 1), np.uint8)})  # j is fetched: it goes
    assert store.get("j", "bright") is None
    store.put("m", {"bright": one, "inverse": two})
    store.put("n", {"result": np.zeros((10, 10, 1), np.uint8)})  # nothing fetched: m spills
    np.testing.assert_array_equal(store.get("m", "inverse"), two)
    np.testing.assert_array_equal(store.get("m", "bright"), one)
    assert store.get("m", "missing") is None
    store.close()


def test_image_store_forgets_least_recently_used_beyond_its_budget() -> None:
    store = ImageStore(memory_limit=250, ttl=60)
    for name in "abc":
        store.put(name, np.zeros((10, 10, 1), np.uint8))
        store.get("a")  # a stays in use
    with pytest.raises(ImageNotFoundError, match="'b'"):
        store.get("b")
    assert store.get("a") is not None and store.get("c") is not None


def _status(job: str, client: str | None) -> JobStatus:
    return JobStatus(id=job, client=client, task="upscale", model="m", state=JobState.QUEUED)


def test_event_hub_backlog_live_delivery_and_no_duplicates() -> None:
    async def scenario() -> None:
        hub = EventHub(history=100)
        hub.bind(asyncio.get_running_loop())
        first = hub.publish(EventType.QUEUED, _status("j1", "c1"))
        hub.publish(EventType.QUEUED, _status("j2", "c2"))
        # published, not yet delivered: it is in the backlog and must not come twice
        pending = hub.publish(EventType.STARTED, _status("j1", "c1"))
        sub, backlog = hub.subscribe("c1", after=first.seq)
        assert [e.seq for e in backlog] == [pending.seq]
        live = hub.publish(EventType.PROGRESS, _status("j1", "c1"))
        hub.publish(EventType.PROGRESS, _status("j2", "c2"))
        await asyncio.sleep(0)
        got = []
        while not sub.queue.empty():
            got.append(sub.queue.get_nowait())
        assert [e.seq for e in got] == [live.seq]
        hub.close()
        await asyncio.sleep(0)
        assert sub.queue.get_nowait() is None  # the stream ends
        all_events, backlog_all = hub.subscribe(None, after=0, everyone=True)
        assert len(backlog_all) == 5 and all_events.queue.get_nowait() is None
        # without everyone, None is the client of jobs sent without one: none here
        _anonymous, backlog_none = hub.subscribe(None, after=0)
        assert backlog_none == []

    asyncio.run(scenario())
