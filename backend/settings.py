"""The server's settings: the command line wins over RESTORA_* environment variables, which win
over the config file, which wins over the defaults below.

The config file is TOML (`server.toml` in the config folder, or --config / RESTORA_CONFIG), with
the keys at the top level or under `[server]`; a `.json` file works too (Python 3.10 has no
TOML reader in its standard library). Environment variables are the field names in capitals
with a RESTORA_ prefix: RESTORA_PORT=9000, RESTORA_PRELOAD=a,b. Models folders come from
--models-dir and RESTORA_MODELS, as for every other command (backend.paths).

The app reads its settings through `get_settings` (a FastAPI dependency), so tests build an
app with their own `Settings` and nothing is read from the environment at import time.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import InvalidParameterError, RestoraError
from shared.protocol import DEFAULT_PORT

MiB = 1 << 20
GiB = 1 << 30
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: a shorter token can be guessed by anyone who can reach the port
MIN_TOKEN_CHARS = 16
_TOKEN_HINT = (
    "Make one with `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'` and pass it "
    "with --token-file FILE or RESTORA_TOKEN (--token shows it to every local user in the "
    "process list)."
)
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class UnsafeExposureError(RestoraError):
    code = "unsafe_exposure"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: when set, every request but /v1/health, /docs and /openapi.json needs "Bearer TOKEN"
    token: str | None = None
    #: a file holding the token (read at start); unlike --token, not visible in the process list
    token_file: str | None = None
    #: Host names accepted besides loopback literals and localhost when bound to loopback
    #: (a name in /etc/hosts that points here, say); DNS rebinding uses any other name
    allowed_hosts: list[str] = field(default_factory=list)
    device: str = "auto"
    precision: str = "auto"
    models_dirs: list[str] = field(default_factory=list)
    preload: list[str] = field(default_factory=list)
    #: the model catalog the editors download from (RESTORA_CATALOG; default: the shipped one)
    catalog: str | None = None
    #: a mirror: downloads come from URL/<file name>, still checked against the catalog
    catalog_base_url: str | None = None
    #: one upload's body, in bytes
    max_upload_bytes: int = 512 * MiB
    #: a request whose body sends nothing for this long is answered 408 and closed
    body_timeout_seconds: float = 30.0
    #: input pixels (width x height) of an image or mask; checked before decoding
    max_pixels: int = 100_000_000
    #: output pixels of a job, so a small image cannot ask for a 100x upscale
    max_output_pixels: int = 600_000_000
    max_queued_jobs: int = 1000
    #: a result is kept this long after its job ends, fetched or not ...
    result_ttl: float = 3600.0
    #: ... and this long after it was first fetched, in case the download broke
    fetched_result_ttl: float = 300.0
    #: results beyond this are written to `spill_dir` (fetched ones are dropped first)
    result_memory_bytes: int = 2 * GiB
    spill_dir: str | None = None
    #: uploaded images not yet used by a job are forgotten after this long ...
    image_ttl: float = 900.0
    #: ... or, least recently used first, when they take more than this
    image_memory_bytes: int = 2 * GiB
    #: loaded models kept at most; fewer when device memory runs short
    max_loaded_models: int = 3
    #: bytes the loaded models may take on the device and in host memory (0: what is free)
    model_device_bytes: int = 0
    model_host_bytes: int = 0
    #: PNG results: 1 is several times faster than 6 and barely larger for photos
    png_compress_level: int = 1
    #: events kept for clients that reconnect with Last-Event-ID
    event_history: int = 10_000
    keepalive_seconds: float = 15.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        # a token pasted with a newline or spaces around it is the same token
        if self.token is not None:
            self.token = self.token.strip()
        self.allowed_hosts = [h.strip().strip("[]").lower() for h in self.allowed_hosts]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        """Refuse settings that are unsafe or out of range, naming the setting."""
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            what = "empty" if not self.token else f"only {len(self.token)} characters"
            raise UnsafeExposureError(
                f"The token is {what}; it must be at least {MIN_TOKEN_CHARS} characters "
                "(spaces around it do not count), or it can be guessed.",
                _TOKEN_HINT,
            )
        if not self.loopback and not self.token:
            raise UnsafeExposureError(
                f"Refusing to listen on {self.host} without a token: anyone on the network "
                "could run jobs.",
                "Pass --token-file FILE (or RESTORA_TOKEN), or listen on 127.0.0.1.",
            )
        for name in self.allowed_hosts:
            if not _HOST_NAME.match(name) and not _is_ip(name):
                raise InvalidParameterError(
                    f"allowed_hosts: '{name[:64]}' is not a host name.",
                    "Give names like restora.local, without a scheme or port.",
                )
        if not 0 <= self.port <= 65535:
            raise InvalidParameterError(f"port must be 0..65535, not {self.port}.", "")
        if not 0 <= self.png_compress_level <= 9:
            raise InvalidParameterError(
                f"png_compress_level must be 0..9, not {self.png_compress_level}.", ""
            )
        for name in (
            "max_upload_bytes",
            "max_pixels",
            "max_output_pixels",
            "max_queued_jobs",
            "max_loaded_models",
            "event_history",
        ):
            if getattr(self, name) < 1:
                raise InvalidParameterError(
                    f"{name} must be positive, not {getattr(self, name)}.", ""
                )
        for name in (
            "result_ttl",
            "fetched_result_ttl",
            "image_ttl",
            "keepalive_seconds",
            "body_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                raise InvalidParameterError(
                    f"{name} must be positive, not {getattr(self, name)}.", ""
                )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: Fields that are not read from RESTORA_<NAME>: paths.models_dirs() reads RESTORA_MODELS itself.
_NOT_FROM_ENV = {"models_dirs"}


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Settings:
    """Defaults < config file < environment < command line (values that are None are unset)."""
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, Any]]] = []
    path = _config_path(config, env)
    if path is not None:
        layers.append((str(path), _read_config(path)))
    from_env: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = env.get(f"RESTORA_{f.name.upper()}")
        if raw is not None and raw != "" and f.name not in _NOT_FROM_ENV:
            from_env[f.name] = _convert(f, raw, f"RESTORA_{f.name.upper()}")
    layers.append(("the environment", from_env))
    layers.append(("the command line", {k: v for k, v in (cli or {}).items() if v is not None}))
    values: dict[str, Any] = {}
    for where, layer in layers:
        _read_token_file(layer, where)
        if "token" in layer:  # a token given here replaces a token file named below
            values.pop("token_file", None)
        values.update(layer)
    settings = Settings(**values)
    settings.check()
    return settings


def _read_token_file(layer: dict[str, Any], where: str) -> None:
    """A token file named in `layer` becomes the layer's token."""
    name = layer.get("token_file")
    if not name:
        return
    if layer.get("token"):
        raise InvalidParameterError(
            f"Both a token and a token file are given in {where}.", "Give only one of them."
        )
    path = Path(name).expanduser()
    try:
        layer["token"] = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise InvalidParameterError(
            f"Cannot read the token file {path}: {reason}.", "Check --token-file."
        ) from None


def _config_path(config: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    explicit = config or env.get("RESTORA_CONFIG")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise InvalidParameterError(f"Config file {p} does not exist.", "Check the path.")
        return p
    from backend import paths

    default = paths.config_dir() / "server.toml"
    return default if default.is_file() else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(f"Cannot read {path}: {exc.strerror}.", "") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _parse_toml(text, path)
    except ValueError as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise InvalidParameterError(f"{path} is not valid: {exc}.", "Fix the file.") from None
    if not isinstance(data, dict):
        raise InvalidParameterError(f"{path} must hold a table of settings.", "")
    if isinstance(data.get("server"), dict):
        data = data["server"]
    known = {f.name: f for f in dataclasses.fields(Settings)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise InvalidParameterError(
                f"{path}: unknown setting '{key}'.", f"Known settings: {', '.join(sorted(known))}."
            )
        values[name] = _convert(known[name], value, f"{path}: {key}")
    return values


def _parse_toml(text: str, path: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise InvalidParameterError(
                f"Python {sys.version_info.major}.{sys.version_info.minor} cannot read TOML "
                f"({path}).",
                "Write the settings as JSON in a .json file, or install tomli.",
            ) from None
    return tomllib.loads(text)


def _convert(f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    """A string (environment) or TOML/JSON value converted to the field's type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list):
                return [str(v) for v in value]
            raise ValueError
        if kind.startswith("int"):
            if isinstance(value, (bool, float)):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[
                str(value).lower()
            ]
        return str(value)
    except (ValueError, KeyError, TypeError):
        raise InvalidParameterError(
            f"{where}={value!r} is not a valid {kind.split(' ')[0]}.", "Fix the setting."
        ) from None
