"""Real GIMP 3 for tests: the Debian 13 root, a GIMP home inside it with Restora's plug-in
installed by installer/gimp_plugin.py, and batch Python runs whose JSON the host reads back.

GIMP 3 is not in Debian 12, so tests/editors/gimp_root.sh builds (once, cached outside the
clone) a Debian 13 root with GIMP 3.0.4; CI exports its path as RESTORA_GIMP_ROOT. Without
GIMP the tests fail, saying why: they are how we know the plug-in works.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
EDITORS = REPO / "tests" / "editors"
HERE = Path(__file__).resolve().parent
ROOT_BUILD_TIMEOUT = 1200


def gimp_root() -> Path:
    """The GIMP 3 root: $RESTORA_GIMP_ROOT, else built (or found) by gimp_root.sh."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        pytest.fail("The GIMP 3 tests run GIMP in a Debian 13 chroot, which needs root. Run "
                    "them as root (CI does), e.g. "
                    "`sudo bash tests/run.sh tests/gimp/test_gimp_e2e.py`.")
    root = os.environ.get("RESTORA_GIMP_ROOT", "").strip()
    if not root:
        try:
            done = subprocess.run(["bash", str(EDITORS / "gimp_root.sh")], capture_output=True,
                                  text=True, timeout=ROOT_BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("Building the GIMP 3 root (tests/editors/gimp_root.sh) took longer "
                        f"than {ROOT_BUILD_TIMEOUT} s.")
        if done.returncode != 0 or not done.stdout.strip():
            pytest.fail("GIMP 3 is not available: tests/editors/gimp_root.sh failed "
                        f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
        root = done.stdout.strip().splitlines()[-1]
    path = Path(root)
    if not (path / "usr" / "bin" / "gimp-console-3.0").exists():
        pytest.fail(f"GIMP 3 is not available: {path} has no usr/bin/gimp-console-3.0. Build "
                    "the root with tests/editors/gimp_root.sh and export its path as "
                    "RESTORA_GIMP_ROOT.")
    return path


@dataclass
class GimpHome:
    """A GIMP home inside the root, with Restora installed; `inside` is its path in there."""

    root: Path
    inside: str

    @property
    def on_host(self) -> Path:
        return self.root / self.inside.lstrip("/")

    @property
    def plugin_dir(self) -> Path:
        return self.on_host / ".config" / "GIMP" / "3.0" / "plug-ins"

    def batch(self, script: Path, env: dict[str, str], out_name: str, timeout: float = 240,
              display: str | None = None, gui: bool = False) -> dict[str, Any]:
        """Run `script` in GIMP's batch mode; returns the JSON it wrote. `gui`: the whole GIMP
        (its windows and menus on `display`) instead of gimp-console-3.0."""
        out = self.on_host / out_name
        out.unlink(missing_ok=True)
        inner_env = {**env, "RESTORA_E2E_OUT": f"{self.inside}/{out_name}"}
        if display:
            inner_env["DISPLAY"] = display
        program = ["gimp-3.0", "--no-splash"] if gui else ["gimp-console-3.0", "-i"]
        command = ["bash", str(EDITORS / "gimp_run.sh"), str(self.root), "env",
                   *(f"{k}={v}" for k, v in inner_env.items()),
                   *program, "-n", "--batch-interpreter", "python-fu-eval",
                   "-b", "-", "--quit"]
        with open(script, "rb") as stdin:
            done = subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout,
                                  env={**os.environ, "GIMP_HOME": self.inside,
                                       "GIMP_RUN_TIMEOUT": str(int(timeout))})
        log = (done.stdout + done.stderr).decode("utf-8", "replace")
        if not out.exists():
            pytest.fail(f"GIMP wrote no results (exit {done.returncode}); its output:\n"
                        f"{log[-6000:]}")
        results = json.loads(out.read_text())
        results["_log"] = log
        return results


@contextmanager
def virtual_display(size: tuple[int, int]) -> Iterator[str]:
    """An Xvfb display of `size` (the chroot reaches its abstract socket: a chroot shares the
    host's network namespace); its name, e.g. ":90"."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None or ctypes.util.find_library("Xtst") is None:
        pytest.fail("Xvfb or libXtst is missing (apt-get install xvfb libxtst6; tests/run.sh "
                    "installs them): GIMP's windows need a display, and tests press keys "
                    "through XTEST", pytrace=False)
    number = next(n for n in range(90, 200)
                  if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock")
                  .exists())
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", f"{size[0]}x{size[1]}x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Xvfb did not start")
            time.sleep(0.05)
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def gimp_home_with_plugin(root: Path) -> Iterator[GimpHome]:
    """A fresh GIMP home in the root's /tmp, Restora installed by the real installer."""
    tmp = root / "tmp"
    host_dir = Path(tempfile.mkdtemp(prefix="restora-gimp-test-", dir=tmp))
    home = GimpHome(root, "/" + str(host_dir.relative_to(root)))
    try:
        done = subprocess.run([sys.executable, str(REPO / "installer" / "gimp_plugin.py"),
                               "install", "--dest", str(home.plugin_dir)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"installer/gimp_plugin.py install failed:\n{done.stderr}")
        yield home
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def plugin_processes(home: GimpHome) -> list[int]:
    """Ids of the Restora plug-in processes GIMP started from this home (the test's own)."""
    marker = str(home.plugin_dir / "restora" / "restora.py").encode()
    inside = f"{home.inside}/.config/GIMP/3.0/plug-ins/restora/restora.py".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (inside in cmdline or marker in cmdline) and b"-gimp" in cmdline:
            found.append(int(entry.name))
    return found
