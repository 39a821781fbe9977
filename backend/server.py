"""`restora serve`: check the settings, bind the port, and run the app under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
from typing import Any

from backend.errors import RestoraError
from backend.settings import Settings, load_settings

log = logging.getLogger("restora.server")

#: seconds uvicorn waits for open requests (event streams) when stopping
GRACEFUL_SHUTDOWN = 3


class PortInUseError(RestoraError):
    code = "port_in_use"


def settings_from_args(args: argparse.Namespace) -> Settings:
    cli: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "token": args.token,
        "token_file": getattr(args, "token_file", None),
        "device": args.device,
        "precision": getattr(args, "precision", None),
        "preload": args.preload or None,
        "models_dirs": args.models_dir or None,
    }
    return load_settings(cli, config=args.config)


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket first, so a busy port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it every keep-alive response waits 40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(
            f"Cannot listen on {host}:{port}: {exc.strerror}.",
            "Another Restora may be running; choose another --port.",
        ) from None
    sock.set_inheritable(True)
    return sock


def make_server(settings: Settings, app: Any | None = None) -> Any:
    """A uvicorn server for the app that also ends event streams when asked to stop."""
    import uvicorn

    from backend.app import create_app

    app = app or create_app(settings)

    class RestoraServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            hub = getattr(app.state, "hub", None)
            if hub is not None:
                hub.close()  # event streams never end by themselves
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return RestoraServer(config)


def serve_from_args(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(message)s")
    _check_device(settings)
    _check_preload(settings)
    sock = bind(settings.host, settings.port)
    server = make_server(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = sock.getsockname()[1]
    print(
        f"Restora server on http://{host}:{port} (API docs: http://{host}:{port}/docs)"
        + ("; token required" if settings.token else ""),
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after it stopped
        server.run(sockets=[sock])
    return 0


def _check_device(settings: Settings) -> None:
    """A device that is not there (--device cuda without a GPU) stops the start at once."""
    from backend.devices import resolve_device

    resolve_device(settings.device)


def _check_preload(settings: Settings) -> None:
    """Unknown --preload names stop the start at once instead of failing later in the log."""
    if not settings.preload:
        return
    from backend import paths
    from backend.models.registry import Registry

    registry = Registry(paths.models_dirs(settings.models_dirs))
    for name in settings.preload:
        registry.find(name)
