"""Loaded models kept between jobs, within byte budgets of device and host memory.

Each item is keyed by its files on disk (path, size, mtime) and the device and precision it
was loaded for, and measured in bytes once loaded. Before a load the adapter's estimate is
checked: least recently used items that no running job pins are evicted until it fits, and a
load that cannot fit even then fails at once, saying how much it needs and how much there is.
Evicting drops every reference the manager holds, collects, and empties the CUDA/MPS cache.

Only one load runs at a time (two tasks asking for one shared component get one object);
other threads may read the state (health, model list) under the lock.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import OutOfMemoryError
from backend.models.manager.adapters import Adapter, DetectorEntry, default_adapters
from backend.models.manager.memory import (
    TIER_MARGIN_BYTES,
    Tier,
    choose_tier,
    load_retrying,
    megabytes,
    release_memory,
    tensors_of,
    torch_nbytes,
)

log = logging.getLogger("restora.models")

Key = tuple[Hashable, ...]


def default_free_memory(device: str) -> int:
    from backend.devices import free_memory, resolve_device

    return free_memory(resolve_device(device))


@dataclass(eq=False)
class _Item:
    key: Key
    name: str
    kind: str
    obj: Any
    nbytes: int
    pool: str  # "device" (an accelerator's memory) or "host"
    release: Callable[[Any], None] | None


class ModelManager:
    """Loads through adapters, keeps within budgets, evicts the least recently used unpinned."""

    def __init__(
        self,
        device: str = "auto",
        precision: str = "auto",
        device_budget_bytes: int | None = None,
        host_budget_bytes: int | None = None,
        free_memory: Callable[[str], int] = default_free_memory,
        adapters: Iterable[Adapter] | None = None,
        max_items: int | None = None,
    ) -> None:
        """Budgets bound the bytes of loaded items plus one load's estimate (None: only free
        memory bounds them); on a CPU the device is the host and both bound the one pool.
        `max_items` also bounds how many are kept; `free_memory(device)` reports free bytes."""
        self.device = device
        self.precision = precision
        self.device_budget_bytes = device_budget_bytes
        self.host_budget_bytes = host_budget_bytes
        self.max_items = max_items
        self.adapters: list[Adapter] = list(default_adapters() if adapters is None else adapters)
        self._free_memory = free_memory
        self._items: OrderedDict[Key, _Item] = OrderedDict()
        self._pins: Counter[Key] = Counter()
        self._resolved: dict[str, str] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.RLock()

    # -- loading ---------------------------------------------------------------------------

    def get(self, entry: Any, device: str | None = None) -> Any:
        """The loaded model for `entry` (a registry entry, a DetectorEntry, ...), loading it,
        and evicting unpinned others when memory is short."""
        adapter = self.adapter_for(entry)
        dev = self._device_name(device or self.device)
        key = self._key(adapter, entry, dev)
        with self._load_lock:
            hit = self._hit(key)
            if hit is not None:
                return hit
            name = adapter.name(entry)
            need = adapter.estimate(entry)
            self._make_room(need, self._pool(dev), name)
            obj = load_retrying(
                name, lambda: adapter.load(entry, dev, self.precision), self.unload_all
            )
            size = adapter.nbytes(obj)
            self._store(_Item(key, name, adapter.kind, obj, size, "", adapter.release))
        log.info("loaded %s on %s (%s)", name, dev, megabytes(size))
        return obj

    def detector(self, device: Any = None, models_dirs: list[Path] | None = None) -> Any:
        """The face detector (BlazeFace and the face mesh), one per device and set of files."""
        return self.get(DetectorEntry.find(models_dirs), None if device is None else str(device))

    def component(
        self,
        key: Hashable,
        loader: Callable[[], Any],
        nbytes: int | None = None,
        estimate: int = 0,
        release: Callable[[Any], None] | None = None,
    ) -> Any:
        """One object per `key` for every task that asks (one SDXL VAE for refine and tiled
        refine); `loader()` runs once. Tasks pin it while they use it. `nbytes`: its size
        when it holds no torch tensors; `estimate`: bytes to make room for before loading."""
        item_key: Key = ("component", key)
        with self._load_lock:
            hit = self._hit(item_key)
            if hit is not None:
                return hit
            name = str(key)
            self._make_room(estimate, self._pool(self._device_name(self.device)), name)
            obj = load_retrying(name, loader, self.unload_all)
            size = torch_nbytes(obj) if nbytes is None else nbytes
            self._store(_Item(item_key, name, "component", obj, size, "", release))
        return obj

    def adapter_for(self, entry: Any) -> Adapter:
        for adapter in self.adapters:
            if adapter.accepts(entry):
                return adapter
        raise TypeError(f"no model adapter accepts {type(entry).__name__} {entry!r}")

    def register(self, adapter: Adapter) -> None:
        """Try `adapter` after this manager's others."""
        self.adapters.append(adapter)

    # -- pins ------------------------------------------------------------------------------

    @contextmanager
    def pinned(self, *things: Any) -> Iterator[None]:
        """Keep `things` (loaded objects or their entries) from eviction while the block runs;
        pins count, so two tasks pinning one shared component both keep it."""
        keys = [k for k in (self._key_of(t) for t in things) if k is not None]
        with self._lock:
            self._pins.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(keys)
                self._pins += Counter()  # drop keys at zero

    @contextmanager
    def use(self, *entries: Any) -> Iterator[list[Any]]:
        """Load `entries` (each pinned before the next loads) and keep them while in use."""
        with self.pinned(*entries):
            yield [self.get(e) for e in entries]

    # -- unloading -------------------------------------------------------------------------

    def unload_all(self, keep: Any = None) -> int:
        """Unload every item but the pinned and `keep` (an object or entry, or several);
        returns how many were unloaded."""
        one = self._key_of(keep)
        kept = {one} if one is not None else set()
        if one is None and isinstance(keep, Iterable) and not isinstance(keep, (str, bytes)):
            kept = {self._key_of(k) for k in keep}
        with self._lock:
            victims = [i for k, i in self._items.items() if k not in kept and not self._pins[k]]
        for item in victims:
            self._evict(item, collect=False)
        if victims:
            release_memory(self._device_name(self.device))
        return len(victims)

    def evict(self, thing: Any) -> bool:
        """Unload one unpinned item now; False when it is not loaded or is pinned."""
        key = self._key_of(thing)
        with self._lock:
            item = self._items.get(key) if key is not None and not self._pins[key] else None
        if item is not None:
            self._evict(item)
        return item is not None

    # -- reporting -------------------------------------------------------------------------

    def loaded_names(self) -> list[str]:
        """Names of the loaded items, least recently used first."""
        with self._lock:
            return [i.name for i in self._items.values()]

    def is_loaded(self, entry: Any) -> bool:
        key = self._key_of(entry)
        with self._lock:
            return key is not None and key in self._items

    def usage(self) -> dict[str, Any]:
        """Bytes per loaded item, used and budgeted per pool (for /v1/health)."""
        with self._lock:
            items = [
                {
                    "name": i.name,
                    "kind": i.kind,
                    "pool": i.pool,
                    "bytes": i.nbytes,
                    "pinned": bool(self._pins[i.key]),
                }
                for i in self._items.values()
            ]
        return {
            "device": self._device_name(self.device),
            "precision": self.precision,
            "items": items,
            "used_bytes": {
                p: sum(i["bytes"] for i in items if i["pool"] == p) for p in ("device", "host")
            },
            "budget_bytes": {"device": self._budget("device"), "host": self._budget("host")},
        }

    def tier(
        self,
        need_bytes: int,
        largest_part_bytes: int | None = None,
        margin_bytes: int = TIER_MARGIN_BYTES,
    ) -> Tier:
        """The offload tier for a model of `need_bytes` on this manager's device, from free
        memory (and budgets) after what unpinned items could give back."""
        dev = self._device_name(self.device)
        host = self._available("host")
        device = host if self._pool(dev) == "host" else self._available("device")
        return choose_tier(need_bytes, device, host, largest_part_bytes, margin_bytes)

    def work_bytes(self) -> int:
        """Bytes a running job's working memory (a VAE decode, activations) can use now on this
        manager's device: free memory, within the budget beyond what is loaded. Unlike
        `tier`, loaded items count as taken: nothing is evicted in the middle of a job."""
        pool = self._pool(self._device_name(self.device))
        free = self._free(pool)
        budget = self._budget(pool)
        if budget is None:
            return free
        with self._lock:
            used = sum(i.nbytes for i in self._items.values() if i.pool == pool)
        return max(min(free, budget - used), 0)

    # -- internals -------------------------------------------------------------------------

    def _device_name(self, device: str) -> str:
        if device not in self._resolved:
            from backend.devices import resolve_device

            self._resolved[device] = str(resolve_device(device))
        return self._resolved[device]

    def _pool(self, device: str) -> str:
        return "host" if device.split(":")[0] == "cpu" else "device"

    def _key(self, adapter: Adapter, entry: Any, device: str) -> Key:
        return (adapter.kind, adapter.files(entry), device, self.precision)

    def _key_of(self, thing: Any) -> Key | None:
        """The key of a loaded object (by identity) or of an entry an adapter accepts."""
        if thing is None:
            return None
        with self._lock:
            for key, item in self._items.items():
                if item.obj is thing:
                    return key
        adapter = next((a for a in self.adapters if a.accepts(thing)), None)
        if adapter is None:
            return None  # not something this manager loads: nothing to pin or keep
        return self._key(adapter, thing, self._device_name(self.device))

    def _hit(self, key: Key) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item.obj

    def _store(self, item: _Item) -> None:
        tensors = list(tensors_of(item.obj))
        on_device = sum(t.nbytes for t in tensors if t.device.type != "cpu")
        if tensors:
            item.pool = "device" if on_device * 2 > sum(t.nbytes for t in tensors) else "host"
        else:
            item.pool = self._pool(self._device_name(self.device))
        with self._lock:
            self._items[item.key] = item

    def _budget(self, pool: str) -> int | None:
        own = self.device_budget_bytes if pool == "device" else self.host_budget_bytes
        if pool == "host" and self._pool(self._device_name(self.device)) == "host":
            given = [b for b in (self.device_budget_bytes, self.host_budget_bytes) if b is not None]
            return min(given) if given else None
        return own

    def _free(self, pool: str) -> int:
        dev = self._device_name(self.device)
        return self._free_memory("cpu" if pool == "host" else dev)

    def _available(self, pool: str) -> int:
        """Bytes a load could have in `pool` once every unpinned item there is evicted."""
        with self._lock:
            held = [i for i in self._items.values() if i.pool == pool]
            pinned = sum(i.nbytes for i in held if self._pins[i.key])
            evictable = sum(i.nbytes for i in held) - pinned
        available = self._free(pool) + evictable
        budget = self._budget(pool)
        return available if budget is None else min(available, budget - pinned)

    def _make_room(self, need: int, pool: str, name: str) -> None:
        available = self._available(pool)
        if need > available:
            where = "the GPU" if pool == "device" else "memory"
            raise OutOfMemoryError(
                f"Loading {name} needs {megabytes(need)}; {megabytes(max(available, 0))} of"
                f" {where} can be made available (models in use kept).",
                "Close other programs using the GPU or memory, let the running job finish,"
                " or use a smaller model.",
            )
        while (victim := self._victim(need, pool)) is not None:
            log.info("unloading %s to make room for %s", victim.name, name)
            self._evict(victim)

    def _victim(self, need: int, pool: str) -> _Item | None:
        """The least recently used unpinned item to evict for a load of `need` bytes into
        `pool`, or None when it fits (or nothing more can go: the load then tries anyway)."""
        with self._lock:
            free = [i for i in self._items.values() if not self._pins[i.key]]
            if self.max_items is not None and len(self._items) >= self.max_items and free:
                return free[0]
            in_pool = [i for i in free if i.pool == pool]
            if not in_pool:
                return None
            used = sum(i.nbytes for i in self._items.values() if i.pool == pool)
            budget = self._budget(pool)
        over_budget = budget is not None and used + need > budget
        return in_pool[0] if over_budget or self._free(pool) < need else None

    def _evict(self, item: _Item, collect: bool = True) -> None:
        with self._lock:
            if self._items.get(item.key) is not item:
                return
            del self._items[item.key]
        obj, item.obj = item.obj, None
        if item.release is not None:
            item.release(obj)
        del obj
        if collect:
            release_memory(self._device_name(self.device))
