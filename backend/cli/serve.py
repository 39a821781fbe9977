"""`restora serve`: the local backend server for the editor plug-ins."""

from __future__ import annotations

import argparse
from typing import Any

from backend.cli.common import add_models_dir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    serve = sub.add_parser("serve", help="run the local backend server for the editor plug-ins")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8765")
    serve.add_argument(
        "--token",
        default=None,
        help="required when listening beyond loopback, at least 16 characters; other local "
        "users can read it in the process list, so prefer --token-file or RESTORA_TOKEN",
    )
    serve.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="read the token from FILE (also RESTORA_TOKEN_FILE); keep it readable by you only",
    )
    serve.add_argument("--preload", action="append", metavar="MODEL", help="load a model at start")
    serve.add_argument(
        "--config",
        default=None,
        help="settings file (TOML, or JSON); default: server.toml in the config "
        "folder if present; see docs/server.md",
    )
    serve.add_argument("-d", "--device", default=None, help="auto, cpu, cuda or mps")
    serve.add_argument(
        "-p", "--precision", default=None, help="auto (measured), fp32, fp16 or bf16"
    )
    add_models_dir(serve)
    return serve
