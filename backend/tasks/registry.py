"""The one place that knows which tasks exist: every module in backend/tasks/ with a `SPEC`.

Adding a task is adding its module; the CLI, the server and (through /v1/tasks) both editors
find it here. Importing the modules imports no torch (each task imports its engine in `run`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator

from backend.errors import TaskUnavailableError
from backend.tasks.spec import TaskSpec

#: modules of the package that hold the contract itself, not a task
_NOT_TASKS = frozenset({"spec", "context", "registry"})


class TaskRegistry:
    def __init__(self, specs: Iterable[TaskSpec]) -> None:
        self._specs: dict[str, TaskSpec] = {}
        for spec in sorted(specs, key=lambda s: (s.order, s.id)):
            if spec.id in self._specs:
                raise ValueError(f"two tasks have the id {spec.id!r}")
            self._specs[spec.id] = spec
        commands = [s.cli_name for s in self._specs.values()]
        if len(set(commands)) != len(commands):
            raise ValueError(f"two tasks share a command name: {commands}")

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._specs

    def ids(self) -> list[str]:
        return list(self._specs)

    def get(self, task_id: str) -> TaskSpec:
        spec = self._specs.get(task_id)
        if spec is None:
            shown = task_id if len(task_id) <= 40 else task_id[:37] + "..."
            raise TaskUnavailableError(
                f"The task '{shown}' is not available in this version of Restora.",
                f"Tasks it runs: {', '.join(self._specs)}.",
            )
        return spec

    def by_command(self, command: str) -> TaskSpec | None:
        return next((s for s in self._specs.values() if s.cli_name == command), None)


_default: TaskRegistry | None = None


def discover(package: str = "backend.tasks") -> TaskRegistry:
    """Every task module of `package`, imported once, in menu order."""
    pkg = importlib.import_module(package)
    specs = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in _NOT_TASKS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, TaskSpec):
            specs.append(spec)
    return TaskRegistry(specs)


def default_registry() -> TaskRegistry:
    global _default
    if _default is None:
        _default = discover()
    return _default
