"""Run the service in its own process and measure it over HTTP on loopback.

:class:`ServiceProcess` starts ``python -m retrieval_lib.service`` on a free port and waits until
``/health`` answers; :func:`load_test` sends a fixed list of requests from ``concurrency`` client
threads (each with a kept-alive connection) and reports throughput and latency percentiles, and the
``Server-Timing`` stages of every response (:func:`server_timing`), so the latency of one request can
be split into the query tower, the ANN search, re-ranking, building the response and what is left:
HTTP and the client.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``with ServiceProcess("book") as service:`` runs the service on loopback; ``service.url`` is its address.

    Start-up builds or loads the system through the artifact cache (the same cache as this process);
    ``timeout`` bounds the wait for ``/health``. The process is stopped on exit (or by :meth:`stop`, or
    when this interpreter exits); its log is kept in :attr:`log` for a failed start. Outside a ``with``
    block, :meth:`start` and :meth:`stop` do the same.
    """

    def __init__(self, preset: str = "book", seed: int = 0, port: int | None = None, timeout: float = 600.0) -> None:
        self.preset, self.seed, self.timeout = preset, int(seed), float(timeout)
        self.port = free_port() if port is None else int(port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = ""
        self.start_seconds = float("nan")

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServiceProcess:
        """Start the service and wait until it answers ``/health``; return ``self``."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the service is already running")
        cmd = [sys.executable, "-m", "retrieval_lib.service", "--preset", self.preset, "--seed", str(self.seed),
               "--port", str(self.port)]
        # the parent's thread count, so the system loads from the cache it built (the key holds the
        # thread count); the service itself serves on one torch thread
        env = {**os.environ, "TQDM_DISABLE": "1"}
        start = time.perf_counter()
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=Path.cwd())
        threading.Thread(target=self._read_log, daemon=True).start()
        atexit.register(self.stop)
        while time.perf_counter() - start < self.timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with code {self.process.returncode}:\n{self.log[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    self.start_seconds = time.perf_counter() - start
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the service did not answer /health within {self.timeout:.0f} s:\n{self.log[-3000:]}")

    def _read_log(self) -> None:
        for line in self.process.stdout:
            self.log += line

    def stop(self) -> None:
        """Stop the service (gracefully, then by force after 10 seconds); nothing if it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on Ctrl-C
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_timing(header: str) -> dict[str, float]:
    """Parse ``Server-Timing: query_tower;dur=0.8, ann;dur=0.2`` into ``{"query_tower": 0.8, "ann": 0.2}``."""
    stages = {}
    for part in filter(None, (p.strip() for p in header.split(","))):
        name, *params = (x.strip() for x in part.split(";"))
        durations = [float(p[4:]) for p in params if p.startswith("dur=")]
        if name and durations:
            stages[name] = durations[0]
    return stages


@dataclass
class LoadResult:
    """One load test: throughput, latency percentiles (milliseconds) and every request's measurements."""

    concurrency: int
    requests: int
    seconds: float
    errors: int
    requests_frame: pd.DataFrame = field(repr=False)

    @property
    def qps(self) -> float:
        """Requests answered per second."""
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the client-measured latency in milliseconds."""
        return float(np.percentile(self.requests_frame["total_ms"], q))

    def summary(self) -> dict[str, float]:
        """``concurrency, requests, qps, p50_ms, p95_ms, p99_ms, errors``."""
        return {"concurrency": self.concurrency, "requests": self.requests, "qps": self.qps,
                "p50_ms": self.percentile(50), "p95_ms": self.percentile(95), "p99_ms": self.percentile(99),
                "errors": self.errors}


def load_test(url: str, bodies: list[dict], concurrency: int = 1, path: str = "/search", warmup: int = 20,
              timeout: float = 30.0) -> LoadResult:
    """Send every body in ``bodies`` to ``url + path`` from ``concurrency`` threads; measure each request.

    The first ``warmup`` bodies are sent once beforehand and not measured. A non-200 answer counts as an
    error (its latency is kept). ``requests_frame`` has one row per request: ``total_ms``, ``status``
    and the server's stages in milliseconds.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be positive, got {concurrency}")
    if not bodies:
        raise ValueError("no requests to send")
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=timeout)
        return local.client

    def send(body: dict) -> dict[str, float]:
        start = time.perf_counter()
        response = client().post(path, json=body)
        total = (time.perf_counter() - start) * 1e3
        return {"total_ms": total, "status": response.status_code,
                **server_timing(response.headers.get("server-timing", ""))}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, bodies[:warmup]))
        start = time.perf_counter()
        rows = list(pool.map(send, bodies))
        seconds = time.perf_counter() - start
    frame = pd.DataFrame(rows)
    return LoadResult(concurrency, len(bodies), seconds, int((frame["status"] != 200).sum()), frame)


def latency_breakdown(result: LoadResult) -> pd.Series:
    """Median milliseconds per stage of a request, plus ``http_and_client`` (the rest of the total)."""
    frame = result.requests_frame[result.requests_frame["status"] == 200]
    stages = [c for c in frame.columns if c not in ("total_ms", "status")]
    median = frame[stages].median()
    median["http_and_client"] = max(0.0, float(frame["total_ms"].median() - frame[stages].sum(axis=1).median()))
    return median
