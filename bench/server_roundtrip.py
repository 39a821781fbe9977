"""What the server costs on top of the engine: upload, queue, events and download.

Upscales one image (default 2048x2048 RGB) several times by calling the engine directly
(backend.tasks.upscale.run on a loaded model) and through a `restora serve` process on
loopback, the way a plug-in does it with the standard library only: upload, submit, wait for
the 'finished' event, download. Both paths run the same model with the same settings in the
same run; the table gives medians and the ratio server / direct, for raw pixels and for PNG
(PNG encoding and decoding on the client counted, since a plug-in would have to do it).

Without --model a tiny random-weight Compact network is used, so the engine's own time is
small and the server's overhead shows; with --model NAME (from `restora models list`) a real
model shows what the overhead means in practice.

Usage, from the repository root:
    python bench/server_roundtrip.py [--size 2048] [--runs 3] [--model NAME] [--scale 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.imaging import decode, encode  # noqa: E402
from shared.protocol import PixelFormat  # noqa: E402


class Timings:
    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.parts[name])


def tiny_model(folder: Path, scale: int) -> str:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    path = folder / "upscale_models" / f"bench-tiny-x{scale}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path.stem


class Server:
    """`restora serve` in its own process, reached with http.client like a plug-in."""

    def __init__(self, port: int, env: dict[str, str], model: str, device: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backend.cli",
                "serve",
                "--port",
                str(port),
                "--device",
                device,
                "--preload",
                model,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.json("GET", "/v1/health")["ready"]:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("restora serve did not start")
            time.sleep(0.2)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        conn = self.connect()
        conn.request(method, path, body=body, headers=headers or {})
        return conn.getresponse()

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        resp = self.request(method, path, data, {"Content-Type": "application/json"})
        payload = json.loads(resp.read())
        if resp.status >= 400:
            raise SystemExit(f"{method} {path}: {resp.status} {payload}")
        return payload

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def round_trip(
    server: Server,
    pixels: np.ndarray,
    model: str,
    params: dict,
    fmt: str,
    timings: Timings,
    client: str,
) -> np.ndarray:
    start = time.perf_counter()
    # the event stream is open before the job is submitted, as a plug-in keeps it open
    events = server.connect()
    events.request("GET", f"/v1/events?client={client}")
    stream = events.getresponse()

    if fmt == "png":
        body, ctype = encode(pixels, "PNG", 1), "image/png"
    else:
        shape = PixelFormat(pixels.shape[1], pixels.shape[0], pixels.shape[2])
        body, ctype = memoryview(np.ascontiguousarray(pixels)).cast("B"), shape.media_type()
    resp = server.request("POST", "/v1/images", body, {"Content-Type": ctype})
    image_id = json.loads(resp.read())["id"]
    uploaded = time.perf_counter()
    job = server.json(
        "POST",
        "/v1/jobs",
        {"task": "upscale", "model": model, "params": params, "image": image_id, "client": client},
    )
    for raw in stream:
        line = raw.decode().strip()
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event["job"] == job["id"] and event["state"] in ("finished", "failed", "cancelled"):
                break
    events.close()
    if event["state"] != "finished":
        raise SystemExit(f"job {event['state']}: {event.get('error')}")
    ran = time.perf_counter()
    resp = server.request("GET", f"/v1/jobs/{job['id']}/result?format={fmt}")
    data = resp.read()
    if fmt == "png":
        out = decode(data)
    else:
        shape = PixelFormat.parse(resp.headers["Content-Type"])
        out = np.frombuffer(data, np.uint8).reshape(shape.height, shape.width, shape.channels)
    done = time.perf_counter()
    status = server.json("GET", f"/v1/jobs/{job['id']}")
    server.request("DELETE", f"/v1/jobs/{job['id']}").read()
    timings.add("in job", status["finished"] - status["started"])
    timings.add("overhead", (done - start) - (status["finished"] - status["started"]))
    timings.add("upload", uploaded - start)
    timings.add("queue+run", ran - uploaded)
    timings.add("download", done - ran)
    timings.add("total", done - start)
    return out


def median_of(runs: int, fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    assert out is not None
    return out, statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    ap.add_argument("--runs", type=int, default=3, help="runs per path (default 3)")
    ap.add_argument("--model", help="a model from `restora models list` (default: a tiny one)")
    ap.add_argument(
        "--scale", type=int, default=2, choices=(2, 4), help="scale of the tiny model (default 2)"
    )
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--port", type=int, default=8790)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="restora-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("RESTORA_CONFIG",)}
    if args.model is None:
        env["RESTORA_HOME"] = str(tmp / "home")
        env["RESTORA_MODELS"] = str(tmp / "models")
        os.environ.update(RESTORA_HOME=env["RESTORA_HOME"], RESTORA_MODELS=env["RESTORA_MODELS"])
        model = tiny_model(tmp / "models", args.scale)
    else:
        model = args.model

    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks.upscale import UpscaleParams, run

    rng = np.random.default_rng(0)
    # a smooth image with noise: compresses like a photo, not like random bytes
    yy, xx = np.mgrid[0 : args.size, 0 : args.size].astype(np.float32) / args.size
    base = np.stack([xx, yy, (xx + yy) / 2], axis=2) * 200
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)

    loaded = load_model(Registry().find(model), device=args.device)
    params = {"tile": 512}  # the same fixed tile on both paths, whatever memory is free
    direct_out, direct = median_of(args.runs, lambda: run(pixels, loaded, UpscaleParams(**params)))
    print(
        f"model {model} on {loaded.device.type} ({loaded.precision}), "
        f"{args.size}x{args.size} RGB -> {direct_out.shape[1]}x{direct_out.shape[0]}, "
        f"{args.runs} runs, medians",
        flush=True,
    )

    server = Server(args.port, env, model, args.device)
    try:
        rows = []
        for fmt in ("raw", "png"):
            timings = Timings()
            round_trip(server, pixels, model, params, fmt, Timings(), "bench-warmup")
            for i in range(args.runs):
                out = round_trip(server, pixels, model, params, fmt, timings, f"bench-{fmt}-{i}")
                if not np.array_equal(out, direct_out):
                    diff = np.abs(out.astype(int) - direct_out).max()
                    print(f"  note: {fmt} result differs from the direct one by up to {diff}")
            rows.append((fmt, timings))
    finally:
        server.stop()

    # "overhead" is the round trip less the job's own time inside the server (its started and
    # finished stamps): upload, queue, events and download, free of the engine's run-to-run noise
    print(
        f"{'path':12} {'total s':>8} {'upload':>7} {'queue+run':>10} {'download':>9} "
        f"{'in job':>7} {'overhead':>9} {'ratio':>6}"
    )
    print(
        f"{'direct':12} {direct:8.3f} {'-':>7} {'-':>10} {'-':>9} {direct:7.3f} {'-':>9} {1.0:6.3f}"
    )
    for fmt, t in rows:
        total = t.median("total")
        print(
            f"{'server ' + fmt:12} {total:8.3f} {t.median('upload'):7.3f} "
            f"{t.median('queue+run'):10.3f} {t.median('download'):9.3f} "
            f"{t.median('in job'):7.3f} {t.median('overhead'):9.3f} {total / direct:6.3f}"
        )
    print("ratio = median server round trip / median direct engine call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
