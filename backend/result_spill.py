"""The folder where a server's results wait on disk when they do not fit in memory.

Each server process spills into its own folder under Restora's cache folder (not the shared
temp folder: these are users' pixels) and holds a lock on a file inside it for as long as it
lives. The operating system drops the lock when the process dies, even by kill -9, so a later
start removes the folders nobody holds and never touches a running server's.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from backend import paths

log = logging.getLogger("restora.results")

PREFIX = "results-"
LOCK_FILE = ".lock"
#: a folder without its lock file yet may be one another process is creating this instant
UNLOCKED_GRACE_SECONDS = 60.0


def spill_root(configured: str | None) -> Path:
    return Path(configured).expanduser() if configured else paths.cache_dir() / "results"


def _try_lock(handle: IO[bytes]) -> bool:
    """Take the file's exclusive lock without waiting; False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class SpillFolder:
    """This process's spill folder, created on first use and locked until `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._path: Path | None = None
        self._lock: IO[bytes] | None = None

    def path(self) -> Path:
        if self._path is None:
            self.root.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.root))
            lock = open(path / LOCK_FILE, "wb")  # noqa: SIM115 (held open: it is the lock)
            if not _try_lock(lock):
                lock.close()
                raise OSError(f"cannot lock the new spill folder {path}")
            self._path, self._lock = path, lock
        return self._path

    def close(self) -> None:
        path, lock = self._path, self._lock
        self._path = self._lock = None
        if lock is not None:
            lock.close()  # closing drops the lock; Windows cannot delete an open file
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def remove_stale(root: Path) -> int:
    """Remove the spill folders under `root` whose server is gone; returns how many."""
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.glob(f"{PREFIX}*"):
        if not folder.is_dir():
            continue
        lock_path = folder / LOCK_FILE
        try:
            if not lock_path.exists():
                if time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_SECONDS:
                    continue
            else:
                with open(lock_path, "rb+") as lock:
                    if not _try_lock(lock):
                        continue  # a running server's
        except OSError as exc:  # vanished meanwhile, or not ours to read
            log.debug("spill folder %s: %s", folder, exc)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed += 1
    if removed:
        log.info("removed %d spill folder(s) left by servers that did not stop cleanly", removed)
    return removed
