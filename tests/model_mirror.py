"""A local stand-in for the model hosts: files served over HTTP on 127.0.0.1, and a catalog that
names them with their true size and SHA-256, so downloads from the server and the plug-ins are
tested end to end without the network.

`mirror()` serves a folder's files (Range requests answered, so resuming works); a file can be
served slowly, in small pieces, so a test can cancel while it is on its way. `write_catalog()`
writes a version-1 catalog of `MirrorModel`s; the server reads it through its `catalog`
setting and fetches `<base URL>/<file>` through `catalog_base_url`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Mirror:
    files: dict[str, bytes] = field(default_factory=dict)
    #: file name -> seconds to wait between pieces of `piece` bytes
    slow: dict[str, float] = field(default_factory=dict)
    piece: int = 16 * 1024
    #: (file name, Range header or None) of every request, in order
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def asked_for(self, name: str) -> list[str | None]:
        """The Range header of each request for `name` (None: the whole file)."""
        return [rng for file, rng in self.requests if file == name]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: Mirror = self.server.mirror  # type: ignore[attr-defined]
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
        state.requests.append((name, self.headers.get("Range")))
        data = state.files.get(name)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start, status = int(match.group(1)), 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        delay = state.slow.get(name, 0.0)
        step = state.piece if delay else max(len(body), 1)
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                if delay:
                    time.sleep(delay)
        except OSError:
            pass  # the client stopped reading (a cancel)
        self.close_connection = True


@contextlib.contextmanager
def mirror() -> Iterator[Mirror]:
    """A file server on a free loopback port, until the block ends."""
    state = Mirror()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.mirror = state  # type: ignore[attr-defined]
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="model-mirror")
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        # a proxy in the environment must not see loopback requests
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        try:
            yield state
        finally:
            httpd.shutdown()
            httpd.server_close()


@dataclass
class MirrorModel:
    """One catalog entry and the bytes the mirror serves for it."""

    name: str
    file: str
    data: bytes
    task: str = "upscale"
    folder: str = "upscale_models"
    licence: str = "MIT"
    non_commercial: bool = False
    restricted_use: bool = False
    label: str = ""
    traits: list[str] = field(default_factory=list)
    recommended: bool = False
    #: the hash the catalog pins: None for the file's own, "" for none (unverified)
    sha256: str | None = None

    def entry(self) -> dict[str, Any]:
        pinned = hashlib.sha256(self.data).hexdigest() if self.sha256 is None else self.sha256
        return {
            "name": self.name,
            "task": self.task,
            "family": "test",
            "file": self.file,
            "size": len(self.data) if pinned else None,
            "sha256": pinned or None,
            "sha256_source": "computed by the test",
            "licence": self.licence,
            "non_commercial": self.non_commercial,
            "restricted_use": self.restricted_use,
            "url": f"https://example.invalid/{self.file}",
            "folder": self.folder,
            "description": f"{self.label or self.name}, for tests."
            + ("" if pinned else " Needs --allow-unverified."),
            "label": self.label,
            "traits": self.traits,
            "recommended": self.recommended,
        }


def write_catalog(path: Path, models: list[MirrorModel], served: Mirror) -> Path:
    """The catalog file naming `models`, each served by `served` under its file name."""
    for model in models:
        served.files[model.file] = model.data
    path.write_text(json.dumps({"version": 1, "models": [m.entry() for m in models]}))
    return path


def tiny_model_bytes(tmp: Path, scale: int, seed: int) -> bytes:
    """A real spandrel-loadable upscaler (Compact, 8 features, random weights), as bytes."""
    from tests.server_fixtures import make_tiny_model

    return make_tiny_model(tmp / f"tiny-{seed}.safetensors", scale, seed).read_bytes()


def noise(n: int, seed: int = 1) -> bytes:
    """Deterministic bytes that are no model: a stand-in for a large file on its way."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@dataclass
class DownloadServer:
    """A real Restora server whose catalog is `models`, all served by `mirror`."""

    live: Any  # server_fixtures.LiveServer
    mirror: Mirror
    home: Path  # RESTORA_HOME: downloads land in home/models/<folder>/

    def target(self, folder: str, file: str) -> Path:
        return self.home / "models" / folder / file


@contextlib.contextmanager
def download_server(
    tmp_path_factory: pytest.TempPathFactory, make_models: Callable[[Path], list[MirrorModel]]
) -> Iterator[DownloadServer]:
    """The server on loopback with an empty models folder and its own home, its `catalog`
    the models `make_models(folder)` returns, its `catalog_base_url` the mirror's."""
    from tests import server_fixtures as fx

    home = tmp_path_factory.mktemp("downloads-home")
    root = tmp_path_factory.mktemp("downloads-models")  # a models folder with nothing in it
    files = tmp_path_factory.mktemp("downloads-files")
    with mirror() as served, pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESTORA_HOME", str(home))
        mp.delenv("RESTORA_MODELS", raising=False)
        catalog = write_catalog(files / "catalog.json", make_models(files), served)
        settings = fx.test_settings(
            fx.ModelsSetup(root, home), catalog=str(catalog), catalog_base_url=served.url
        )
        with fx.live_server(settings) as live:
            yield DownloadServer(live, served, home)
