"""Server settings (command line > environment > config file) and `restora serve` itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.errors import InvalidParameterError
from backend.settings import (
    MIN_TOKEN_CHARS,
    Settings,
    UnsafeExposureError,
    is_loopback,
    load_settings,
)
from tests import server_fixtures as fx

tiny_models = fx.tiny_models  # fixture

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8765 and s.token is None
    s.check()


def test_command_line_beats_environment_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('port = 9001\ndevice = "cpu"\nresult_ttl = 60\npreload = ["a", "b"]\n')
    env = {"RESTORA_PORT": "9002", "RESTORA_RESULT_TTL": "30"}
    s = load_settings({"port": 9003}, env=env, config=config)
    assert (s.port, s.result_ttl, s.device, s.preload) == (9003, 30.0, "cpu", ["a", "b"])
    s = load_settings({"port": None}, env=env, config=config)
    assert s.port == 9002
    s = load_settings({}, env={}, config=config)
    assert s.port == 9001


def test_config_file_forms(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[server]\nmax-upload-bytes = 1000\n")
    assert load_settings({}, env={}, config=toml).max_upload_bytes == 1000
    js = tmp_path / "a.json"
    js.write_text(json.dumps({"port": 1234, "preload": "x,y"}))
    s = load_settings({}, env={"RESTORA_CONFIG": str(js)})
    assert s.port == 1234 and s.preload == ["x", "y"]


def test_default_config_file_in_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "server.toml").write_text("port = 7777\n")
    assert load_settings({}, env={}).port == 7777


def test_bad_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="RESTORA_PORT='abc'"):
        load_settings({}, env={"RESTORA_PORT": "abc"}, config=None)
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(InvalidParameterError, match="unknown setting 'prot'"):
        load_settings({}, env={}, config=bad)
    bad.write_text("port = \n")
    with pytest.raises(InvalidParameterError, match="not valid"):
        load_settings({}, env={}, config=bad)
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_settings({}, env={}, config=tmp_path / "missing.toml")
    with pytest.raises(InvalidParameterError, match="png_compress_level"):
        load_settings({"png_compress_level": 12}, env={}, config=None)


def test_beyond_loopback_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("[::1]") and not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(UnsafeExposureError, match="without a token"):
        load_settings({"host": "0.0.0.0"}, env={}, config=None)
    token = "t" * MIN_TOKEN_CHARS
    assert load_settings({"host": "0.0.0.0", "token": token}, env={}, config=None).token == token


@pytest.mark.parametrize("token", ["   ", "\n", "short-token", " " * 20 + "x"])
def test_blank_and_short_tokens_are_refused(token: str) -> None:
    for host in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(UnsafeExposureError, match="at least 16 characters"):
            load_settings({"host": host}, env={"RESTORA_TOKEN": token}, config=None)


def test_a_token_is_stripped(tmp_path: Path) -> None:
    token = "correct-horse-battery-staple"
    s = load_settings({"host": "0.0.0.0"}, env={"RESTORA_TOKEN": f"  {token}\n"}, config=None)
    assert s.token == token


def test_token_file(tmp_path: Path) -> None:
    from_file, from_env = "token-from-the-file-1234", "token-from-the-env-12345"
    path = tmp_path / "token"
    path.write_text(from_file + "\n")
    s = load_settings({"host": "0.0.0.0", "token_file": str(path)}, env={}, config=None)
    assert s.token == from_file
    s = load_settings({}, env={"RESTORA_TOKEN_FILE": str(path)}, config=None)
    assert s.token == from_file
    # a later layer's token beats an earlier layer's file, and the other way round
    s = load_settings({"token": from_env}, env={"RESTORA_TOKEN_FILE": str(path)}, config=None)
    assert s.token == from_env and s.token_file is None
    s = load_settings({"token_file": str(path)}, env={"RESTORA_TOKEN": from_env}, config=None)
    assert s.token == from_file
    with pytest.raises(InvalidParameterError, match="Both a token and a token file"):
        load_settings({"token": from_env, "token_file": str(path)}, env={}, config=None)
    with pytest.raises(InvalidParameterError, match="Cannot read the token file"):
        load_settings({"token_file": str(tmp_path / "missing")}, env={}, config=None)
    path.write_text("  \n")
    with pytest.raises(UnsafeExposureError, match="empty"):
        load_settings({"token_file": str(path)}, env={}, config=None)


def test_allowed_hosts_must_be_host_names() -> None:
    s = load_settings({}, env={"RESTORA_ALLOWED_HOSTS": "Restora.Local, 10.0.0.2"}, config=None)
    assert s.allowed_hosts == ["restora.local", "10.0.0.2"]
    with pytest.raises(InvalidParameterError, match="allowed_hosts"):
        load_settings({"allowed_hosts": ["http://evil.example:80"]}, env={}, config=None)


def test_serve_refuses_a_blank_token_for_a_public_host(tiny_models: fx.ModelsSetup) -> None:
    proc = _serve(
        ["--host", "0.0.0.0", "--port", str(fx.free_port())], tiny_models, {"RESTORA_TOKEN": "   "}
    )
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "at least 16 characters" in err, err


def test_serve_reads_its_token_from_a_file_not_the_command_line(
    tiny_models: fx.ModelsSetup, tmp_path: Path
) -> None:
    token = "a-secret-kept-in-a-file"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    port = fx.free_port()
    proc = _serve(["--port", str(port), "--device", "cpu", "--token-file", str(path)], tiny_models)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "restora serve did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/jobs").status_code == 401
        authorised = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/v1/jobs", headers=authorised).status_code == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and b"--token-file" in cmdline
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def _serve(
    args: list[str], models: fx.ModelsSetup, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {
        **fx.env_without_restora(),
        "RESTORA_HOME": str(models.home),
        "RESTORA_MODELS": str(models.root),
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_refuses_a_public_host_without_a_token(tiny_models: fx.ModelsSetup) -> None:
    proc = _serve(["--host", "0.0.0.0", "--port", str(fx.free_port())], tiny_models)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "without a token" in err and "--token" in err


def test_restora_serve_runs_a_job_and_stops_cleanly(tiny_models: fx.ModelsSetup) -> None:
    port = fx.free_port()
    proc = _serve(["--port", str(port), "--device", "cpu", "--preload", "tiny-x2"], tiny_models)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/v1/health", timeout=2).json()
                if health["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "restora serve did not start"
            time.sleep(0.1)
        assert health["loaded_models"] == ["tiny-x2"]  # --preload warmed it
        c = fx.Client(url, "serve")
        image = fx.random_image(12, 16)
        job = c.submit(image)
        events = c.events(lambda e: e["type"] == "finished")
        assert "progress" in [e["type"] for e in events]
        np.testing.assert_array_equal(c.result(job["id"]), fx.reference_upscale(tiny_models, image))
        # an open event stream must not keep the server from stopping
        listener = threading.Thread(target=lambda: _drain(url), daemon=True)
        listener.start()
        time.sleep(0.3)
        c.close()
    finally:
        stop = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    # uvicorn would wait GRACEFUL_SHUTDOWN seconds for the open stream, then cancel it
    assert "graceful shutdown exceeded" not in err and "Waiting for connections" not in err, err
    assert time.monotonic() - stop < 15
    assert f"http://127.0.0.1:{port}" in err


def _drain(url: str) -> None:
    try:
        with httpx.stream("GET", f"{url}/v1/events", timeout=30) as r:
            for _ in r.iter_lines():
                pass
    except httpx.HTTPError:
        pass
