#!/usr/bin/env python3
"""Restora's installer: the backend, its PyTorch, the default models and the editor plug-ins.

    python3 installer/install.py [options]      (install.sh / install.ps1 find a Python first)

1. looks at the hardware and picks the PyTorch build (torch_variants.py),
2. creates or updates the backend's environment (backend_env.py; default: .venv in this
   checkout, `--user`: Restora's data folder, `--env DIR`: anywhere),
3. imports the offline default models,
4. records how to start the backend (backend.json, read by the plug-ins' "Start backend"),
5. installs the plug-ins into every Krita and GIMP 3 found (editor_targets.py),
6. with --service, makes the backend start at login (backend_service.py),
7. writes a manifest of what it created, which `--uninstall` removes and nothing else.

Running it again upgrades in place: steps whose inputs did not change are skipped, and models
and settings are never touched. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

if sys.version_info < (3, 10):  # noqa: UP036 - a bare python3 may be older
    sys.exit(f"Restora needs Python 3.10 or newer; this is {sys.version.split()[0]}.")

import backend_env
import backend_service
import editor_targets
import krita_plugin
import torch_variants

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_NAME = "install-manifest.json"
BACKEND_FILE = "backend.json"  # as plugin/common/launcher.py reads it
MANIFEST_FORMAT = 1
GIMP_SETTINGS = "restora-settings.json"  # plugin/gimp/store.py, beside GIMP's plug-ins folder
#: seconds to wait for PyTorch's index before installing from the default index instead
PROBE_TIMEOUT = 6.0


def load_paths() -> ModuleType:
    """backend/paths.py (standard library only) without importing the backend package, so the
    installer and the backend agree on Restora's folders."""
    spec = importlib.util.spec_from_file_location("restora_paths", ROOT / "backend" / "paths.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ROOT / 'backend' / 'paths.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def say(message: str = "") -> None:
    print(message, flush=True)


# --- PyTorch ----------------------------------------------------------------------------------


def index_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """PyTorch's index answers for torch (it does not where only a package mirror is
    reachable, as on machines that may use their company's index only)."""
    try:
        request = urllib.request.Request(f"{url.rstrip('/')}/torch/", method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def torch_source_for(
    choice: torch_variants.TorchChoice, index: str | None, reachable=index_reachable, log=say
) -> backend_env.TorchSource:
    """Where the chosen build comes from.

    The variant's index on download.pytorch.org is used only when it answers: where only a
    package mirror is reachable (offline workplaces, this project's CI) the pinned
    torch-requirements.txt comes from the default index instead, so the installer works there
    unchanged. `--torch-index URL` (or RESTORA_TORCH_INDEX) names an index outright, and
    `--torch-index default` always uses the default one.
    """
    default = backend_env.default_torch_source()
    pins = torch_variants.read_pins(backend_env.TORCH_REQUIREMENTS)
    if index == "default":
        return default
    if index is not None:
        labelled = index.startswith(torch_variants.PYTORCH_INDEX)
        variant = choice.variant if labelled else torch_variants.DEFAULT_BUILD
        return backend_env.TorchSource(
            choice.variant,
            tuple(torch_variants.variant_requirements(pins, variant)),
            index,
            f"PyTorch from {index}",
        )
    url = choice.index_url
    if url is None:
        return default
    if reachable(url):
        return backend_env.TorchSource(
            choice.variant,
            tuple(torch_variants.variant_requirements(pins, choice.variant)),
            url,
            f"PyTorch's {choice.variant} build from {url}",
        )
    log(
        f"{url} cannot be reached: installing the pinned PyTorch from your "
        "default package index instead (on Linux and Windows PyPI's build carries CUDA: "
        "larger, and it runs on the CPU too). Name an index with --torch-index URL."
    )
    return default


# --- the manifest -----------------------------------------------------------------------------


@dataclass
class Manifest:
    """What the installer created, kept as JSON in Restora's data folder."""

    path: Path
    data: dict

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        for key in ("environments", "plugins", "files", "services"):
            data.setdefault(key, [])
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def save(self) -> None:
        self.data.update(format=MANIFEST_FORMAT, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.part")
        partial.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def add_environment(self, venv: Path, created: bool) -> None:
        envs = self.data["environments"]
        old = next((e for e in envs if e["path"] == str(venv)), None)
        if old is None:
            envs.append({"path": str(venv), "created": created})
        else:
            old["created"] = bool(old.get("created")) or created

    def add_plugin(self, installed: editor_targets.InstalledPlugin) -> None:
        t = installed.target
        entry = {
            "editor": t.editor,
            "layout": t.layout,
            "folder": str(t.folder),
            "paths": [str(p) for p in installed.paths],
            "kritarc": str(t.kritarc) if t.kritarc else None,
            "kritarc_added": installed.enabled_in_kritarc,
        }
        plugins = self.data["plugins"]
        for old in plugins:
            if old["folder"] == entry["folder"] and old["editor"] == entry["editor"]:
                entry["kritarc_added"] = bool(old.get("kritarc_added")) or entry["kritarc_added"]
                plugins.remove(old)
                break
        plugins.append(entry)

    def add_file(self, path: Path) -> None:
        if str(path) not in self.data["files"]:
            self.data["files"].append(str(path))


# --- installing -------------------------------------------------------------------------------


def default_env(paths: ModuleType, user: bool) -> Path:
    """The repository's .venv when this checkout can hold it; else Restora's data folder."""
    if not user and os.access(ROOT, os.W_OK):
        return ROOT / ".venv"
    return paths.data_dir() / "venv"


def choose(args: argparse.Namespace) -> tuple[torch_variants.TorchChoice, str]:
    """The PyTorch choice and a line about the hardware it was made for."""
    variant = args.torch_variant or os.environ.get("RESTORA_TORCH_VARIANT")
    if variant:
        return torch_variants.choice_for_variant(variant), "chosen by hand"
    hardware = torch_variants.probe_hardware()
    return torch_variants.choose_torch(hardware), hardware.describe()


def install(args: argparse.Namespace) -> int:
    started = time.monotonic()
    paths = load_paths()
    manifest = Manifest.load(paths.data_dir() / MANIFEST_NAME)
    venv = Path(args.env).expanduser().resolve() if args.env else default_env(paths, args.user)
    index = args.torch_index or os.environ.get("RESTORA_TORCH_INDEX") or None

    # 1. the hardware and the PyTorch build it needs
    choice, hardware = choose(args)
    say(f"Hardware: {hardware}")
    if choice.problem and index is None:
        say(f"\n{choice.problem}")
        return 2
    say(f"PyTorch: {choice.reason}")
    for note in choice.notes:
        say(f"  note: {note}")

    # 2. the environment (a service must not hold its files while they are replaced)
    if os.name == "nt":
        for service in manifest.data["services"]:
            backend_service.stop_service(service)
    existed = backend_env.is_venv(venv)
    want = choice.variant + (f"@{index}" if index else "")
    result = backend_env.prepare_environment(
        venv,
        dev=args.dev,
        editable=venv == ROOT / ".venv" or args.dev,
        torch_want=want,
        torch_source=lambda: torch_source_for(choice, index),
        log=say,
        diffusion=args.diffusion,
    )
    manifest.add_environment(venv, created=result.created and not existed)
    manifest.data.update(
        restora_version=krita_plugin.version(),
        source=str(ROOT),
        torch={"variant": choice.variant, "reason": choice.reason},
    )
    manifest.save()
    problem = backend_env.opencv_problem(venv)
    if problem:
        say(problem)
        return 1
    restora = backend_env.venv_program(venv, "restora")
    check = subprocess.run([str(restora), "--version"], capture_output=True, text=True)
    if check.returncode != 0:
        say(f"The backend does not start: {check.stderr.strip()[-2000:]}")
        return 1

    # 3. the offline default models (kept as they are when present)
    if not args.skip_models:
        say(f"+ {restora} models install-defaults")
        subprocess.run([str(restora), "models", "install-defaults"], check=True)

    # 4. how the plug-ins start the backend
    log = paths.data_dir() / "logs" / "backend.log"
    env = {k: os.environ[k] for k in ("RESTORA_HOME",) if os.environ.get(k)}
    backend_file = write_backend_file(paths.config_dir(), restora, env, log)
    manifest.add_file(backend_file)
    manifest.add_file(log)
    manifest.save()

    # 5. the plug-ins
    editors = tuple(
        e for e in ("krita", "gimp") if not args.no_plugins and not getattr(args, f"no_{e}")
    )
    installed, notices = install_plugins(manifest, editors)

    # 6. the service: new with --service, kept up to date once there, removed by --no-service
    services: list[backend_service.ServiceRecord] = []
    if args.no_service:
        for old in manifest.data["services"]:
            for line in backend_service.remove_service(old):
                say(line)
        manifest.data["services"] = []
    elif args.service or manifest.data["services"]:
        record = backend_service.install_service(
            [str(restora), "serve"], log, paths.config_dir(), env=env
        )
        services.append(record)
        manifest.data["services"] = [record.to_json()]
    manifest.save()

    # 7. what was done, and what to do next
    summary(
        venv,
        restora,
        result,
        paths,
        installed,
        notices,
        services,
        manifest,
        time.monotonic() - started,
    )
    return 0


def install_plugins(
    manifest: Manifest,
    editors: tuple[str, ...] = ("krita", "gimp"),
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[list[editor_targets.InstalledPlugin], list[editor_targets.Notice]]:
    """The plug-ins into every Krita and GIMP 3 found, each recorded in the manifest."""
    targets, notices = editor_targets.find_targets(platform, env, home, editors=editors)
    installed = []
    for target in targets:
        try:
            done = editor_targets.install_plugin(target)
        except OSError as exc:
            say(f"Could not install into {target.label} ({target.folder}): {exc}")
            continue
        say(f"Installed the {target.label} plug-in in {target.folder}")
        installed.append(done)
        manifest.add_plugin(done)
    manifest.save()
    return installed, notices


def write_backend_file(config_dir: Path, restora: Path, env: dict[str, str], log: Path) -> Path:
    """backend.json: the command the plug-ins' "Start backend" runs."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / BACKEND_FILE
    data = {
        "command": [str(restora), "serve"],
        "env": env,
        "log": str(log),
        "written_by": str(Path(__file__).resolve()),
    }
    text = json.dumps(data, indent=1) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def summary(
    venv: Path,
    restora: Path,
    result: backend_env.EnvResult,
    paths: ModuleType,
    installed: list[editor_targets.InstalledPlugin],
    notices: list[editor_targets.Notice],
    services: list[backend_service.ServiceRecord],
    manifest: Manifest,
    seconds: float,
) -> None:
    changed = (
        "created"
        if result.created
        else "updated"
        if (result.torch_installed or result.package_installed)
        else "up to date"
    )
    say(f"\nRestora is installed ({seconds:.0f} s).")
    say(f"  backend      {venv} ({changed})")
    say(f"  models       {paths.default_models_dir()}")
    for plugin in installed:
        t = plugin.target
        extra = " (enabled in kritarc)" if t.kritarc else ""
        say(f"  {t.label:<12} {plugin.paths[0]}{extra}")
    if not installed:
        say("  plug-ins     none installed")
    for notice in notices:
        say(f"  note: {notice.text}")
    for service in services:
        say(f"  service      {service.message}")
    say(f"  manifest     {manifest.path}")
    say("\nStart the backend:  " + str(restora) + " serve")
    say(
        '  or let the editors start it: Krita\'s Restora docker has a "Start backend" button, '
        "and GIMP starts it when a Restora command runs."
    )
    if any(p.target.editor == "krita" for p in installed):
        say(
            "Krita: restart it, then Settings > Dockers > Restora; the commands are under "
            "Tools > Restora."
        )
    if any(p.target.editor == "gimp" for p in installed):
        say("GIMP: restart it; the commands are under Filters > Restora.")
    say(f"Uninstall: {Path(sys.executable).name} {Path(__file__).resolve()} --uninstall")


# --- uninstalling -----------------------------------------------------------------------------


def uninstall(args: argparse.Namespace) -> int:
    paths = load_paths()
    manifest = Manifest.load(paths.data_dir() / MANIFEST_NAME)
    if not manifest.exists:
        say(f"Nothing to uninstall: there is no manifest at {manifest.path}.")
        if args.purge:
            purge(paths, [])
        return 0
    for service in manifest.data["services"]:
        for line in backend_service.remove_service(service):
            say(line)
    for plugin in manifest.data["plugins"]:
        for raw in plugin.get("paths", []):
            if editor_targets.remove_plugin_path(Path(raw)):
                say(f"Removed {raw}")
        kritarc = plugin.get("kritarc")
        if (
            kritarc
            and plugin.get("kritarc_added")
            and krita_plugin.disable_in_kritarc(Path(kritarc))
        ):
            say(f"Removed enable_restora from {kritarc}")
    for raw in manifest.data["files"]:
        path = Path(raw)
        if path.is_file():
            path.unlink()
            say(f"Removed {path}")
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()
    for env in manifest.data["environments"]:
        path = Path(env["path"])
        if env.get("created") and backend_env.is_venv(path):
            shutil.rmtree(path)
            say(f"Removed {path}")
        elif path.exists():
            say(f"Kept {path} (it was there before the installer ran)")
    manifest.path.unlink()
    if args.purge:
        purge(paths, manifest.data["plugins"])
    else:
        say(
            f"Kept your models ({paths.default_models_dir()}) and settings "
            f"({paths.config_dir()}); --purge removes them too."
        )
    return 0


def purge(paths: ModuleType, plugins: list[dict]) -> None:
    """Restora's own data, settings and cache folders, and its GIMP settings file."""
    folders = [paths.data_dir(), paths.config_dir(), paths.cache_dir()]
    home = Path.home().resolve()
    for folder in dict.fromkeys(Path(f) for f in folders):
        resolved = folder.resolve()
        if resolved in (home, *home.parents) or not folder.is_dir():
            continue  # never a home folder or its parents, whatever RESTORA_HOME says
        shutil.rmtree(folder)
        say(f"Removed {folder}")
    for plugin in plugins:
        if plugin.get("editor") == "gimp":
            settings = Path(plugin["folder"]).parent / GIMP_SETTINGS
            if settings.is_file():
                settings.unlink()
                say(f"Removed {settings}")


# --- the command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py", description=__doc__.splitlines()[0], epilog="Details: docs/install.md"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--env", metavar="DIR", help="the backend's environment (default: .venv in this checkout)"
    )
    where.add_argument(
        "--user", action="store_true", help="put the environment in Restora's data folder instead"
    )
    parser.add_argument(
        "--torch-variant",
        choices=torch_variants.VARIANTS,
        help="the PyTorch build, instead of the one the hardware suggests "
        "(also RESTORA_TORCH_VARIANT)",
    )
    parser.add_argument(
        "--torch-index",
        metavar="URL",
        help="the index PyTorch comes from, or `default` for pip's own "
        "(also RESTORA_TORCH_INDEX); default: PyTorch's index for the build "
        "when it answers, else pip's default",
    )
    parser.add_argument(
        "--skip-models", action="store_true", help="do not import the default models"
    )
    parser.add_argument("--no-krita", action="store_true", help="no Krita plug-in")
    parser.add_argument("--no-gimp", action="store_true", help="no GIMP plug-in")
    parser.add_argument("--no-plugins", action="store_true", help="no plug-ins at all")
    service = parser.add_mutually_exclusive_group()
    service.add_argument(
        "--service",
        action="store_true",
        help="start the backend at login (systemd, launchd, Task Scheduler)",
    )
    service.add_argument(
        "--no-service",
        action="store_true",
        help="remove the login service an earlier run installed",
    )
    parser.add_argument("--dev", action="store_true", help="editable install with test tools")
    parser.add_argument(
        "--diffusion",
        action="store_true",
        help="also install diffusers and transformers for the diffusion tasks (refine, ...)",
    )
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove what the manifest lists (models and settings stay)",
    )
    parser.add_argument(
        "--purge",
        action="store_true",
        help="with --uninstall: also remove models, settings and caches",
    )
    args = parser.parse_args(argv)
    if args.purge and not args.uninstall:
        parser.error("--purge goes with --uninstall")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return uninstall(args) if args.uninstall else install(args)
    except subprocess.CalledProcessError as exc:
        cmd = " ".join(str(c) for c in exc.cmd)
        say(
            f"\nA step failed (exit code {exc.returncode}): {cmd}\n"
            "Fix what it says above and run the installer again; finished steps are skipped."
        )
        return 1
    except KeyboardInterrupt:
        say("\nInterrupted; run the installer again to finish.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
