"""The service under load: requests per second and p50/p99 latency of `python -m nanogpt serve` on loopback,
micro-batched against one forward pass per request, at 1, 8 and 32 concurrent clients, with one review or 32
reviews per request.

The server runs in its own process (as in production); the clients are asyncio tasks in this one, each
sending its next request when the previous answer arrives, so on a 2-core machine clients and server share
the cores. The model has the `cpu` profile's shape with seeded random weights (speed does not depend on what
the weights learned); the reviews are the bundled validation split's, in order, so lengths are real.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = {"micro-batched": dict(max_batch=32, max_wait_ms=2.0), "one forward per request": dict(max_batch=1,
                                                                                                  max_wait_ms=0.0)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`python -m nanogpt serve` in a subprocess, ready when /readyz says so; SIGTERM on exit."""

    def __init__(self, checkpoint: Path, max_batch: int, max_wait_ms: float, max_texts: int = 64,
                 threads: int | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "nanogpt", "serve", "--checkpoint", str(checkpoint), "--port",
                     str(self.port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                     "--max-texts", str(max_texts), "--log-level", "warning"]
        if threads:
            self.args += ["--threads", str(threads)]

    def __enter__(self):
        import httpx

        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited while starting: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the service did not become ready within 120 s")
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)


async def _load(url: str, texts: list[str], clients: int, per_request: int, requests: int, seconds: float) -> dict:
    """`clients` closed-loop clients sending `requests` timed requests in all (or until `seconds` pass), after
    two untimed rounds that warm the connections and the server's buffers for full batches."""
    import httpx

    warmup = 2 * clients
    latencies: list[float] = []
    errors = 0
    sent = 0
    timing = {"start": None, "stop_at": float("inf")}

    async def client(http: httpx.AsyncClient):
        nonlocal sent, errors
        while sent < warmup + requests and time.perf_counter() < timing["stop_at"]:
            i = sent
            sent += 1
            if i == warmup:
                timing["start"] = time.perf_counter()
                timing["stop_at"] = timing["start"] + seconds
            start = (i * per_request) % len(texts)
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/classify", json={"texts": (texts + texts)[start : start + per_request]})
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - timing["start"]
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": wall, "requests_per_s": len(latencies) / wall,
            "reviews_per_s": len(latencies) * per_request / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def serving_figures(profile: str = "cpu", concurrency=(1, 8, 32), per_request=(1, 32), requests: int = 400,
                    seconds: float = 20.0, **overrides) -> dict:
    """Rows of (mode, clients, reviews per request) -> requests/s, reviews/s, p50 and p99 ms."""
    from nanogpt.bench.inference import untrained_checkpoint
    from nanogpt.data.imdb import load_imdb
    from nanogpt.run.profiles import get_profile

    texts = list(load_imdb()["validation"]["text"][:256])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = untrained_checkpoint(get_profile(profile).config.replace(**overrides), Path(tmp) / "model.pt")
        for mode, knobs in MODES.items():
            with Service(checkpoint, max_texts=max(per_request), **knobs) as service:
                for k in per_request:
                    for c in concurrency:
                        n = requests if k == 1 else max(requests // 8, c * 2)
                        row = asyncio.run(_load(service.url, texts, c, k, n, seconds))
                        rows.append({"mode": mode, "clients": c, "reviews_per_request": k, **row})
    out = {"serving_profile": profile, "serving_rows": rows}
    batched = {(r["clients"], r["reviews_per_request"]): r for r in rows if r["mode"] == "micro-batched"}
    single = {(r["clients"], r["reviews_per_request"]): r for r in rows if r["mode"] != "micro-batched"}
    key = (max(concurrency), 1)
    if key in batched and key in single:
        out["serving_batching_speedup"] = batched[key]["requests_per_s"] / single[key]["requests_per_s"]
        out["serving_p99_ms_batched"] = batched[key]["p99_ms"]
    return out
