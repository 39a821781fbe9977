"""Kernels of Restora's own, in C, compiled on the user's machine at first use and loaded
with ctypes: backend/faces/face_kernels.c (the face models' passes) and backend/cpu_kernels.c
(element-wise passes of the super-resolution models).

Compiled with the machine's C compiler (CC, else cc, gcc or clang), -O3 -march=native, into
the cache folder, one file per source, compiler and CPU (a new compiler, CPU or source builds
anew). Where PyTorch has loaded an OpenMP runtime the kernels link to that very file and run
on its threads: threads of their own would compete with PyTorch's spinning workers. Where
there is no compiler, the build fails, or RESTORA_NATIVE_KERNELS=0, `Kernels.load()` is
None with the reason in `Kernels.status()`, and the callers run PyTorch's operators instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from backend import paths

COMPILED = "compiled for this CPU"


class Kernels:
    """One C source's compiled kernels, built and loaded once per process on first use. `prepare`
    declares its functions' signatures and checks what was loaded (raising RuntimeError where it
    does not fit the Python side)."""

    def __init__(self, source: Path, prepare: Callable[[ctypes.CDLL], None]) -> None:
        self.source = source
        self.prepare = prepare
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._status = ""

    def load(self) -> ctypes.CDLL | None:
        with self._lock:
            if self._lib is None and not self._status:
                try:
                    path = build(self.source)
                    try:
                        lib = ctypes.CDLL(str(path))
                    except OSError:
                        # a damaged file in the cache (a full disk, an interrupted copy of the
                        # folder): built anew, once
                        path.unlink(missing_ok=True)
                        lib = ctypes.CDLL(str(build(self.source)))
                    self.prepare(lib)
                    self._lib, self._status = lib, COMPILED
                except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                    self._status = str(exc) or type(exc).__name__
            return self._lib

    def status(self) -> str:
        """Why `load()` is what it is, in words (for `restora doctor`)."""
        self.load()
        return self._status

    def forget(self) -> None:
        """As in a new process: the next `load()` looks again (tests)."""
        with self._lock:
            self._lib, self._status = None, ""


def compiler() -> str:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        found = shutil.which(name) if name else None
        if found:
            return found
    raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's feature flags where the OS lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openmp_runtime() -> str | None:
    """The OpenMP runtime PyTorch has loaded into this process (Linux), or None. Other
    packages (OpenCV, scikit-learn) may bring runtimes of their own: PyTorch's, from its own
    folder, comes first, since sharing its threads is the point."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = re.findall(r"(/\S*/lib(?:gomp|iomp5|omp)\b[^/\s]*\.so[^/\s]*)$", maps, re.M)
    import torch

    home = str(Path(torch.__file__).resolve().parent.parent)
    ours = [f for f in found if str(Path(f).resolve()).startswith(home)]
    return (ours or found or [None])[0]


def build(source: Path) -> Path:
    """The compiled shared object of `source` for this compiler and CPU, built where it is not in
    the cache folder yet."""
    if os.environ.get("RESTORA_NATIVE_KERNELS", "1") == "0":
        raise RuntimeError("switched off by RESTORA_NATIVE_KERNELS=0")
    import torch  # noqa: F401  (its OpenMP runtime, loaded with it, is what the kernels share)

    cc = compiler()
    version = subprocess.run(
        [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    openmp = openmp_runtime()
    key = hashlib.sha256(
        b"\0".join(
            x.encode() for x in (version, _cpu_identity(), platform.machine(), openmp or "")
        )
        + source.read_bytes()
    ).hexdigest()[:20]
    folder = paths.cache_dir() / "native"
    target = folder / f"{source.stem}-{key}.so"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _compile(cc, source, target, openmp)
    return target


def _compile(cc: str, source: Path, target: Path, openmp: str | None) -> None:
    """Compile into a temporary folder beside the target, then rename: a concurrent build or
    an interrupted one never leaves a half-written file under the target's name."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "kernels.o", Path(tmp) / "kernels.so"
        errors = ""
        # -march=native for the vector width this CPU has; without it where it is refused
        for arch in (["-march=native"], []):
            for threads in ([openmp] if openmp else []) + [None]:
                # gnu11, not c11: under a strict standard GCC contracts no a*b+c into FMAs
                compile_ = [cc, *arch, "-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC",
                            "-c", str(source), "-o", str(obj)]  # fmt: skip
                link = [cc, "-shared", str(obj), "-o", str(lib), "-lpthread", "-lm"]
                if threads:
                    compile_.insert(1, "-fopenmp")
                    link[3:3] = [threads, f"-Wl,-rpath,{Path(threads).parent}"]
                for command in (compile_, link):
                    done = subprocess.run(
                        command, capture_output=True, text=True, timeout=120, check=False
                    )
                    if done.returncode:
                        errors = done.stderr.strip()[-400:]
                        break
                else:
                    os.replace(lib, target)
                    return
        raise RuntimeError(f"the C compiler failed on {source.name}: {errors}")
