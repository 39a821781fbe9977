#!/usr/bin/env python3
"""Start-up of the `restora` command, measured in fresh processes: where the time goes before
the first tile.

    .venv/bin/python bench/startup.py [--runs 5] [--model M] [--models-dir D] [--repo DIR ...]

Two commands, each run `--runs` times in a fresh interpreter, alternating so that a shared
machine's load falls on both alike; figures are medians:

* `restora --help`: wall time, and its import time by module (`python -X importtime`).
* `restora upscale` of a 64x64 photo with the default model: the wall time split into
  interpreter start, imports (parsing, the task modules, input checks; PyTorch shown apart),
  choosing the model, loading it, the first tile, the rest (writing, exit), plus the time to
  the first tile's end.

With several `--repo` checkouts (e.g. a worktree of an older commit, then this one), each
command alternates between them too and the table has a column per checkout: before and
after, measured under the same load.

The split comes from timestamps taken inside the child process by wrapping, as each module is
imported, the functions that start each stage (bench-only: nothing in Restora is changed).
Restora's caches (the precision measurement, the registry's index) live in a temporary
RESTORA_HOME, filled by one untimed run first, as they are on a user's machine after the
first use.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: module -> (function, stage name): the first call of each marks a stage's start and end
HOOKS = {
    "backend.cli.tasks": ("cmd_task", "command"),
    "backend.cli.batch": ("import_torch", "torch"),
    "backend.model_choice": ("choose_model", "choose"),
    "backend.models.runtime": ("load_model", "load"),
    "backend.inference": ("run_tensor", "tile"),
}


# --------------------------------------------------------------------------- child side


class _StageHooks(importlib.abc.MetaPathFinder):
    """Wraps HOOKS' functions right after their module runs, before anyone imports them."""

    def __init__(self, stamps: dict[str, float]) -> None:
        self.stamps = stamps

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in HOOKS:
            return None
        sys.meta_path.remove(self)  # find the real spec with the other finders
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        function, stage = HOOKS[name]

        def exec_module(module: Any) -> None:
            run(module)
            setattr(module, function, self._timed(getattr(module, function), stage))

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def _timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = f"{stage}_start" not in self.stamps
            if first:
                self.stamps[f"{stage}_start"] = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                if first:
                    self.stamps[f"{stage}_end"] = time.time()

        return wrapper


def child(out: str, argv: list[str]) -> int:
    """Run `restora argv` here, writing the stage timestamps to `out`."""
    stamps = {"start": time.time()}
    sys.meta_path.insert(0, _StageHooks(stamps))
    sys.path.insert(0, os.environ.get("RESTORA_BENCH_REPO", str(REPO)))
    import backend.cli as cli

    try:
        if not hasattr(cli, "run"):  # an older checkout: its command called main alone
            return cli.main(argv)
        sys.argv = ["restora", *argv]
        cli.run()  # what the `restora` command runs, its exit (SystemExit) included
    finally:
        stamps["end"] = time.time()
        Path(out).write_text(json.dumps(stamps))


# --------------------------------------------------------------------------- parent side


def run_child(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Stage durations (seconds) of one fresh run of `restora argv`."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        spawn = time.time()
        result = subprocess.run(
            [sys.executable, __file__, "--child", out, "--", *argv],
            env=env,
            capture_output=True,
            text=True,
        )
        done = time.time()
        if result.returncode != 0:
            raise SystemExit(f"restora {' '.join(argv)} failed:\n{result.stderr}")
        s = json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)
    times = {"total": done - spawn, "interpreter": s["start"] - spawn}
    if "tile_end" not in s:
        return times
    times["imports"] = s["load_start"] - s["start"] - (s["choose_end"] - s["choose_start"])
    times["of which torch"] = s["torch_end"] - s["torch_start"]
    times["choose model"] = s["choose_end"] - s["choose_start"]
    times["model load"] = s["load_end"] - s["load_start"]
    times["first tile"] = s["tile_end"] - s["tile_start"]
    times["to first tile"] = s["tile_end"] - spawn
    times["after"] = done - s["tile_end"]
    return times


def import_times(argv: list[str], env: dict[str, str], top: int) -> dict[str, float]:
    """Cumulative import time (s) of the `top` slowest top-level imports of `restora argv`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "backend.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        cwd=env["RESTORA_BENCH_REPO"],  # `-m` puts the working directory first on sys.path
    )
    found: dict[str, float] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  ") and cumulative.strip().isdigit():  # top level only
            found[name.strip()] = int(cumulative) / 1e6
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    return dict([("(all top-level)", sum(found.values())), *ranked[:top]])


def prepare(models_dir: str | None, home: Path) -> tuple[Path, Path]:
    """(models folder, input image): the offline defaults imported unless a folder is given."""
    import numpy as np
    from PIL import Image
    from skimage import data

    sys.path.insert(0, str(REPO))
    if models_dir is None:
        from backend.models.defaults import install_default_models

        models = home / "models"
        install_default_models(models / "upscale_models")
    else:
        models = Path(models_dir)
    image = home / "photo64.png"
    crop = np.ascontiguousarray(data.astronaut()[20:84, 170:234])
    Image.fromarray(crop).save(image)
    return models, image


STAGES = (
    "interpreter",
    "imports",
    "of which torch",
    "choose model",
    "model load",
    "first tile",
    "after",
    "to first tile",
    "total",
)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh runs of each command")
    parser.add_argument("--model", default=None, help="the model to upscale with (the default)")
    parser.add_argument("--models-dir", default=None, help="use this models folder as it is")
    parser.add_argument("--top", type=int, default=10, help="slowest imports to list")
    parser.add_argument(
        "--repo", action="append", help="a checkout to measure (repeatable; default: this one)"
    )
    args = parser.parse_args()
    repos = [Path(r).resolve() for r in args.repo or [REPO]]

    home = Path(tempfile.mkdtemp(prefix="restora-startup-"))
    models, image = prepare(args.models_dir, home)
    envs = []
    for i, repo in enumerate(repos):
        envs.append(
            {
                **os.environ,
                "RESTORA_HOME": str(home / f"home{i}"),  # each checkout its own caches
                "RESTORA_MODELS": str(models),
                "RESTORA_BENCH_REPO": str(repo),
                "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
            }
        )
    upscale = ["upscale", str(image), "-o", str(home / "out.png"), "--overwrite", "-q"]
    upscale += ["-m", args.model] if args.model else []
    for i, env in enumerate(envs):
        if i:  # the same precision for every checkout: one measurement, not a noisy one each
            _share_precision(home / "home0", Path(env["RESTORA_HOME"]))
        run_child(upscale, env)  # untimed: fills the precision and registry caches

    runs = [{"help": [], "upscale": []} for _ in repos]
    for _ in range(args.runs):
        for i, env in enumerate(envs):
            runs[i]["help"].append(run_child(["--help"], env))
            runs[i]["upscale"].append(run_child(upscale, env))

    def median(i: int, name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[i][name])

    names = [repo.name for repo in repos]
    head = "".join(f"{n[:14]:>16}" for n in names)
    print(f"fresh processes, median of {args.runs} runs each, alternating; {sys.executable}")
    print(f"  precision (measured once, shared): {_chosen(home / 'home0')}")
    for i, repo in enumerate(repos):
        print(f"  {names[i]}: {repo}")
    print(f"\nrestora --help{'':26}{head}")
    for key in ("total", "interpreter"):
        row = "".join(f"{median(i, 'help', key):14.2f} s" for i in range(len(repos)))
        print(f"  {key:38}{row}")
    _print_imports([import_times(["--help"], env, args.top) for env in envs])
    print(f"\nrestora upscale, 64x64 photo, model {args.model or 'the default'}{head}")
    for key in STAGES:
        label = ("  " if key == "of which torch" else "") + key
        row = "".join(f"{median(i, 'upscale', key):14.2f} s" for i in range(len(repos)))
        print(f"  {label:38}{row}")
    _print_imports([import_times(upscale, env, args.top) for env in envs])
    return 0


def _share_precision(source: Path, target: Path) -> None:
    for found in source.rglob("precision.json"):
        copy = target / found.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(found.read_bytes())


def _chosen(home: Path) -> str:
    """The CPU measurement's times per candidate, as the cache holds them."""
    for found in home.rglob("precision.json"):
        records = json.loads(found.read_text())
        return "; ".join(f"{r['architecture']} {r['times']}" for r in records.values())
    return "not measured (a GPU, or requested)"


def _print_imports(tables: list[dict[str, float]]) -> None:
    """Import time by top-level module (one fresh run each), the slowest of any checkout."""
    print("  imports by module (python -X importtime, top level):")
    names = dict.fromkeys(name for table in tables for name in table)
    for name in names:
        row = "".join(f"{table.get(name, 0.0):14.3f} s" for table in tables)
        print(f"    {name[:36]:36}{row}")


if __name__ == "__main__":
    sys.exit(main())
