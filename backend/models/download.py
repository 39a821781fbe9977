"""Resumable, verified model downloads with the standard library.

A file streams into `<target>.part`. A dropped connection or a timeout is retried with back-off
and resumed with an HTTP `Range: bytes=N-` request; a server that answers a range with the whole
file (200) starts the file over, and one that answers 416 gets its `.part` checked and, if that
is not the finished file, restarted from zero. SHA-256 is computed while streaming (over the
resumed prefix too) and checked, with the size, before `os.replace` moves the file into place:
a wrong file never appears under the model's name, and a good file already there is kept.
A `stop` event (the server's cancel) ends a download between two reads, keeping the `.part`.

Also here: finding and hashing installed catalog files for `restora models verify`.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

from backend import __version__
from backend.errors import RestoraError
from backend.models.catalog import (
    Catalog,
    CatalogEntry,
    UnsafePathError,
    check_file_name,
    known_folders,
)

BASE_URL_ENV = "RESTORA_CATALOG_BASE_URL"
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
#: Statuses worth another try: the server or a proxy is busy, not the request wrong.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Files in a models folder that `verify` reports; a ComfyUI folder also holds readme files.
MODEL_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".onnx", ".gguf", ".param")

#: progress(bytes done, total bytes or None when the server does not say)
ProgressCallback = Callable[[int, "int | None"], None]


class DownloadError(RestoraError):
    code = "download_failed"
    http_status = 502


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes are not the file the catalog describes."""

    code = "checksum_mismatch"


class DownloadCancelledError(DownloadError):
    """The download was stopped on request; its `.part` is kept for a later resume."""

    code = "download_cancelled"
    http_status = 409


class DiskFullError(DownloadError):
    code = "disk_full"
    http_status = 507


class DownloadWriteError(DownloadError):
    """The file could not be written: a read-only folder, no permission."""

    code = "download_write"
    http_status = 507


class UnverifiedModelError(RestoraError):
    """A catalog entry without a pinned SHA-256, asked for without --allow-unverified."""

    code = "unverified_model"
    http_status = 409


class _TransientError(Exception):
    """A failure worth retrying: dropped connection, timeout, a busy server."""


class _Unreachable(_TransientError):
    """No answer at all: no route, refused, name not resolved, or a timeout connecting."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the server has nothing after the bytes we already hold."""

    def __init__(self, total: int | None) -> None:
        super().__init__(f"range not satisfiable (file has {total} bytes)")
        self.total = total


# --- paths and URLs ---------------------------------------------------------------------------


def model_target(models_root: Path, entry: CatalogEntry) -> Path:
    """Where `entry` goes under `models_root`; never outside it, whatever the catalog says."""
    if entry.folder not in known_folders():
        raise UnsafePathError(
            f"'{entry.folder}' is not a models folder.", "Fix the catalog entry's folder."
        )
    check_file_name(entry.folder)
    check_file_name(entry.file)
    root = os.path.normpath(os.path.abspath(models_root))
    target = os.path.normpath(os.path.join(root, entry.folder, entry.file))
    if os.path.commonpath([root, target]) != root or os.path.dirname(target) == root:
        raise UnsafePathError(
            f"{entry.relative_path} would be written outside {root}.", "Fix the catalog entry."
        )
    return Path(target)


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def resolve_url(entry: CatalogEntry, base_url: str | None = None) -> str:
    """The catalog URL, or `<base>/<file name>` on a mirror (`--base-url` or the env var)."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        return entry.url
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(
            f"The mirror URL {base!r} is not an http(s) URL.",
            f"Give --base-url or {BASE_URL_ENV} as http(s)://host/path.",
        )
    return base.rstrip("/") + "/" + urllib.parse.quote(entry.file)


# --- hashing ----------------------------------------------------------------------------------


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    hasher = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            hasher.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return hasher.hexdigest()


@dataclass
class _Part:
    """The `.part` file and the running hash of exactly the bytes it holds."""

    path: Path
    hasher: Any  # hashlib's sha256 object
    done: int = 0

    @classmethod
    def open(cls, path: Path) -> _Part:
        part = cls(path, hashlib.sha256())
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    part.hasher.update(chunk)
                    part.done += len(chunk)
        return part

    def append(self, f, chunk: bytes) -> None:
        f.write(chunk)
        self.hasher.update(chunk)
        self.done += len(chunk)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.hasher = hashlib.sha256()
        self.done = 0

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.done = 0


# --- one file ---------------------------------------------------------------------------------


def download_file(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    backoff: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> str:
    """Download `url` to `target` through `<target>.part`, resuming; return the file's SHA-256.

    The file is moved into place only when its size and hash match `size` and `sha256` (each
    checked when given); on a mismatch the `.part` is deleted and ChecksumMismatchError names
    both hashes and the URL. A download that fails for good keeps its `.part` for next time,
    and so does one stopped by setting `stop` (DownloadCancelledError).
    """
    target = Path(target)
    if stop is not None:
        sleep = stop.wait  # a cancel also cuts the back-off short
    try:
        return _download(
            url, target, sha256, size, progress, retries, timeout, backoff, sleep, stop
        )
    except OSError as exc:  # the network's errors are handled inside: this is the disk
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"The disk is full: {target.name} could not be written to {target.parent}.",
                "Free some space, then download it again; what arrived is kept and resumed.",
            ) from None
        raise DownloadWriteError(
            f"{target.name} could not be written to {target.parent} "
            f"({exc.strerror or type(exc).__name__}).",
            "Check that the models folder exists and can be written to.",
        ) from None


def _download(
    url: str,
    target: Path,
    sha256: str | None,
    size: int | None,
    progress: ProgressCallback | None,
    retries: int,
    timeout: float,
    backoff: float,
    sleep: Callable[[float], None],
    stop: threading.Event | None,
) -> str:
    made = _missing_folders(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _Part.open(part_path(target))
    answered = False  # did the server answer at least once?
    if size is not None and part.done > size:
        part.restart()
    failures = 0
    restarted_after_416 = False
    while True:
        try:
            _check_stop(stop, part, target)
            _fetch(url, part, size, progress, timeout, stop, target)
            break
        except _RangeNotSatisfiable as exc:
            if _part_is_whole(part, sha256, size, exc.total):
                break
            if restarted_after_416:
                part.discard()
                raise DownloadError(
                    f"{url} refused to send the file from the start (HTTP 416).",
                    "Check the URL or the mirror.",
                ) from None
            restarted_after_416 = True
            part.restart()  # the .part is not the file: start again from byte zero
        except _TransientError as exc:
            failures += 1
            answered = answered or not isinstance(exc, _Unreachable)
            if failures > retries and not answered and part.done == 0:
                part.discard()
                _remove_empty(made)
                host = urllib.parse.urlsplit(url).netloc or url
                raise DownloadError(
                    f"{host} could not be reached ({exc}); nothing was downloaded.",
                    "Check the network connection, or download from a mirror with "
                    "--base-url URL (or RESTORA_CATALOG_BASE_URL).",
                ) from None
            if failures > retries:
                raise DownloadError(
                    f"Downloading {url} failed after {retries} retries: {exc}.",
                    f"Run the command again to resume from {part.done} bytes "
                    f"(kept in {part.path.name}).",
                ) from None
            sleep(backoff * 2 ** (failures - 1))
    return _check_and_move(part, target, url, sha256, size)


def _check_stop(stop: threading.Event | None, part: _Part, target: Path) -> None:
    if stop is not None and stop.is_set():
        kept = f"; {part.done} bytes are kept in {part.path.name}" if part.done else ""
        raise DownloadCancelledError(
            f"The download of {target.name} was cancelled{kept}.",
            "Download it again to resume.",
        )


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): leave it and its parents


def _check_and_move(
    part: _Part, target: Path, url: str, sha256: str | None, size: int | None
) -> str:
    actual = part.hasher.hexdigest()
    if size is not None and part.done != size:
        got = part.done
        part.discard()
        raise ChecksumMismatchError(
            f"{target.name} from {url} has {got} bytes, the catalog expects {size}.",
            "The file on the server differs from the catalog's; nothing was installed.",
        )
    if sha256 is not None and actual != sha256:
        part.discard()
        raise ChecksumMismatchError(
            f"{target.name} from {url} failed its checksum: expected sha256 {sha256}, "
            f"got {actual}.",
            "The download was deleted and nothing was installed; try again or use another mirror.",
        )
    os.replace(part.path, target)
    return actual


def _part_is_whole(part: _Part, sha256: str | None, size: int | None, total: int | None) -> bool:
    """After a 416: is the `.part` already the complete, correct file?"""
    if part.done == 0:
        return False
    if total is not None and part.done != total:
        return False
    if size is not None and part.done != size:
        return False
    if sha256 is not None:
        return part.hasher.hexdigest() == sha256
    return total is not None or size is not None  # unverified: only a known length can tell


def _fetch(
    url: str,
    part: _Part,
    size: int | None,
    progress: ProgressCallback | None,
    timeout: float,
    stop: threading.Event | None = None,
    target: Path | None = None,
) -> None:
    """One request: append what the server sends to the `.part`, or raise to retry/restart."""
    headers = {"User-Agent": f"restora/{__version__}", "Accept-Encoding": "identity"}
    if part.done:
        headers["Range"] = f"bytes={part.done}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except HTTPError as exc:
        exc.close()
        if exc.code == 416:
            raise _RangeNotSatisfiable(
                _content_range(exc.headers.get("Content-Range"))[1]
            ) from None
        if exc.code in RETRY_STATUSES:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(
            f"{url} answered HTTP {exc.code} {exc.reason}.",
            "Check the URL, or the mirror given with --base-url.",
        ) from None
    except (URLError, OSError, http.client.HTTPException) as exc:
        raise _Unreachable(str(getattr(exc, "reason", exc)) or type(exc).__name__) from None

    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != part.done:
                part.restart()
                raise _TransientError(f"the server resumed at byte {start}, not {part.done}")
        elif response.status == 200:
            if part.done:
                part.restart()  # the server ignored Range and sends the whole file
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(
                f"{url} answered HTTP {response.status}, not a file.", "Check the URL."
            )
        if size is not None and total is not None and total != size:
            part.discard()
            raise ChecksumMismatchError(
                f"{url} serves {total} bytes, the catalog expects {size}.",
                "The file on the server differs from the catalog's; nothing was installed.",
            )
        _stream(response, part, size, total, progress, url, stop, target or part.path)


def _stream(
    response: http.client.HTTPResponse,
    part: _Part,
    size: int | None,
    total: int | None,
    progress: ProgressCallback | None,
    url: str,
    stop: threading.Event | None = None,
    target: Path | None = None,
) -> None:
    expected = total if total is not None else size
    with part.path.open("ab") as f:
        while True:
            _check_stop(stop, part, target or part.path)
            try:
                # read1: whatever has arrived, so progress and a cancel do not wait for a
                # whole chunk on a slow connection
                chunk = response.read1(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise _TransientError(f"connection lost after {part.done} bytes ({exc})") from None
            if not chunk:
                break
            part.append(f, chunk)
            if size is not None and part.done > size:
                f.close()
                part.discard()
                raise ChecksumMismatchError(
                    f"{url} sent more than the {size} bytes the catalog expects.",
                    "The file on the server differs from the catalog's; nothing was installed.",
                )
            if progress:
                progress(part.done, expected)
    if total is not None and part.done < total:
        # http.client ends a short body quietly; a dropped connection looks like this
        raise _TransientError(f"connection closed after {part.done} of {total} bytes")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes 100-199/200` or `bytes */200`; None where unknown."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total_text = value[6:].partition("/")
    total = int(total_text) if total_text.strip().isdigit() else None
    first = span.split("-", 1)[0].strip()
    return (int(first) if first.isdigit() else None), total


# --- catalog models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadResult:
    entry: CatalogEntry
    path: Path
    status: str  # "downloaded" or "present"
    sha256: str | None


def file_matches(path: Path, entry: CatalogEntry, progress: ProgressCallback | None = None) -> bool:
    """True when `path` is the catalog's file (size, then hash, each where the catalog has it)."""
    if entry.size is not None and path.stat().st_size != entry.size:
        return False
    return entry.sha256 is None or sha256_file(path, progress) == entry.sha256


def installed_paths(entry: CatalogEntry, roots: Iterable[Path]) -> list[Path]:
    """Where `entry`'s file exists under the models folders `roots` (existence only)."""
    found = []
    for root in roots:
        try:
            path = model_target(root, entry)
        except UnsafePathError:
            continue
        if path.is_file() and path not in found:
            found.append(path)
    return found


def download_model(
    entry: CatalogEntry,
    models_root: Path,
    *,
    search_roots: Iterable[Path] = (),
    base_url: str | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    backoff: float = 1.0,
    stop: threading.Event | None = None,
) -> DownloadResult:
    """Install `entry` under `models_root/<folder>/`, unless a matching copy is already in
    `models_root` or one of `search_roots`; `stop` cancels it (see download_file)."""
    if not entry.verified and not allow_unverified:
        raise UnverifiedModelError(
            f"The catalog has no SHA-256 for '{entry.name}', so its download cannot be verified.",
            "Pass --allow-unverified to download it anyway; its hash is printed afterwards.",
        )
    target = model_target(models_root, entry)
    for existing in installed_paths(entry, [models_root, *search_roots]):
        if file_matches(existing, entry):
            return DownloadResult(entry, existing, "present", entry.sha256)
    digest = download_file(
        resolve_url(entry, base_url),
        target,
        sha256=entry.sha256,
        size=entry.size,
        progress=progress,
        retries=retries,
        timeout=timeout,
        backoff=backoff,
        stop=stop,
    )
    return DownloadResult(entry, target, "downloaded", digest)


# --- checking installed files -----------------------------------------------------------------


@dataclass(frozen=True)
class VerifyItem:
    """One file's verdict: ok, corrupt, unverified (no pinned hash), missing, unknown, partial."""

    status: str
    path: Path | None
    entry: CatalogEntry | None = None
    detail: str = ""
    name: str = ""  # for a file that is no catalog entry (an imported default)


def verify_installed(
    catalog: Catalog,
    roots: list[Path],
    names: list[str] | None = None,
    progress_for: Callable[[CatalogEntry, Path], ProgressCallback | None] | None = None,
) -> list[VerifyItem]:
    """Hash every installed catalog file under `roots` (or just `names`); without names, also
    list the files in catalog folders that the catalog does not know."""
    from backend.models.defaults import defaults_in

    entries = [catalog.get(n) for n in names] if names else list(catalog)
    defaults = defaults_in(roots)
    items: list[VerifyItem] = []
    for entry in entries:
        found = installed_paths(entry, roots)
        as_default = [d for d in defaults if d.catalog_name == entry.name]
        if names and not found and as_default:
            items += [_verify_default(d, progress_for, entry) for d in as_default]
        elif not found and names:
            items.append(VerifyItem("missing", None, entry, "not installed"))
        for path in found:
            items.append(
                _verify_one(entry, path, progress_for(entry, path) if progress_for else None)
            )
    if not names:
        items += [_verify_default(d, progress_for) for d in defaults]
        known = {d.path for d in defaults}
        items += [i for i in _stray_files(catalog, roots) if i.path not in known]
    return items


def _verify_default(
    record: Any,
    progress_for: Callable[[CatalogEntry, Path], ProgressCallback | None] | None,
    entry: CatalogEntry | None = None,
) -> VerifyItem:
    """An imported default, checked against the hash recorded when it was imported."""
    progress = progress_for(entry, record.path) if progress_for and entry else None
    actual = sha256_file(record.path, progress)
    detail = f"offline default, from {record.source}"
    if actual != record.sha256:
        return VerifyItem(
            "corrupt",
            record.path,
            None,
            f"sha256 {actual}, imported as {record.sha256}",
            record.name,
        )
    return VerifyItem("ok", record.path, None, detail, record.name)


def _verify_one(entry: CatalogEntry, path: Path, progress: ProgressCallback | None) -> VerifyItem:
    actual_size = path.stat().st_size
    if entry.size is not None and actual_size != entry.size:
        return VerifyItem("corrupt", path, entry, f"{actual_size} bytes, expected {entry.size}")
    actual = sha256_file(path, progress)
    if entry.sha256 is None:
        return VerifyItem("unverified", path, entry, f"sha256 {actual} (the catalog pins none)")
    if actual != entry.sha256:
        return VerifyItem("corrupt", path, entry, f"sha256 {actual}, expected {entry.sha256}")
    return VerifyItem("ok", path, entry)


def _stray_files(catalog: Catalog, roots: list[Path]) -> list[VerifyItem]:
    items = []
    folders = sorted({e.folder for e in catalog})
    for root in roots:
        for folder in folders:
            directory = Path(root) / folder
            if not directory.is_dir():
                continue
            for path in sorted(directory.rglob("*")):
                name = path.name
                if not path.is_file() or name.startswith("."):
                    continue
                if name.endswith(".part"):
                    items.append(VerifyItem("partial", path, None, "an unfinished download"))
                    continue
                rel = path.relative_to(directory).as_posix()
                if name.lower().endswith(MODEL_FILE_SUFFIXES) and not catalog.by_file(folder, rel):
                    items.append(VerifyItem("unknown", path, None, "not in the catalog"))
    return items
