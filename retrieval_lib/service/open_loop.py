"""An open-loop load test: requests sent on a fixed Poisson schedule, latency counted from the scheduled time.

A closed-loop test (:func:`~retrieval_lib.service.loadtest.load_test`) sends a client's next request
only when its last one has answered, so a slow server slows its clients down with it: throughput then
follows latency, Little's law holds by construction, and a stall delays the requests that would have
measured it (*coordinated omission*). Real buyers do not wait for each other. Here arrivals follow a
schedule fixed in advance, a Poisson process at ``rate`` requests per second (independent buyers
arriving), each request goes out at its time whether or not earlier ones have answered, and its latency
runs from the scheduled time, so time spent waiting for the client counts too. The client runs in a
process of its own (one asyncio loop, a connection per request in flight), apart from the caller's.

Below the service's capacity the completions keep pace with the arrivals and Little's law holds with
the *offered* rate (mean requests in flight = rate x mean latency); above it the queue grows for as long
as the test lasts, completions fall behind, and the law with the offered rate no longer holds: that is
how the sweep finds the saturation point.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd

#: Seconds the client keeps an idle connection, well below the server's keep-alive timeout (uvicorn's
#: 5 s, also httpx's default expiry). At equal timeouts a connection can be reused just as the server
#: closes it, and the request fails with a ``ReadError`` that says nothing about the service.
KEEPALIVE_EXPIRY = 1.0


def poisson_schedule(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """Send times (seconds from the start) of ``n`` Poisson arrivals at ``rate`` per second, the first at 0."""
    if not rate > 0 or not np.isfinite(rate):
        raise ValueError(f"rate must be a positive number of requests per second, got {rate}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


@dataclass
class OpenLoopResult:
    """One open-loop run at an offered ``rate``: every request's scheduled, sent and answered times.

    ``frame`` has one row per request: ``scheduled_s``, ``sent_s``, ``done_s`` (seconds from the start),
    ``latency_ms`` (answered minus *scheduled*) and ``status`` (``0`` for a request that got no answer).
    """

    rate: float
    frame: pd.DataFrame = field(repr=False)

    @property
    def requests(self) -> int:
        """Requests sent."""
        return len(self.frame)

    @property
    def errors(self) -> int:
        """Requests not answered with a 200."""
        return int((self.frame["status"] != 200).sum())

    @property
    def seconds(self) -> float:
        """From the first scheduled send to the last answer."""
        return float(self.frame["done_s"].max() - self.frame["scheduled_s"].min())

    @property
    def arrival_rate(self) -> float:
        """The schedule's realised arrivals per second (a Poisson schedule of n requests strays from ``rate``)."""
        span = float(self.frame["scheduled_s"].max() - self.frame["scheduled_s"].min())
        return (self.requests - 1) / span if span > 0 else float("inf")

    @property
    def throughput(self) -> float:
        """Requests answered per second over the whole run (below the offered rate once the queue grows)."""
        return self.requests / self.seconds

    @property
    def in_flight(self) -> float:
        """Time-average number of requests between their scheduled time and their answer."""
        return float(self.frame["latency_ms"].sum() / 1e3 / self.seconds)

    @property
    def little_ratio(self) -> float:
        """Requests in flight over ``arrival rate x mean latency``: 1 while the service keeps up, below 1 past it."""
        return self.in_flight / (self.arrival_rate * self.frame["latency_ms"].mean() / 1e3)

    @property
    def max_send_lag_ms(self) -> float:
        """The latest any request left the client after its scheduled time (the client keeping up)."""
        return float((self.frame["sent_s"] - self.frame["scheduled_s"]).max() * 1e3)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of latency in milliseconds, counted from the scheduled send."""
        return float(np.percentile(self.frame["latency_ms"], q))

    def summary(self) -> dict[str, float]:
        """The run in one row: rates, requests, throughput, in flight, Little's ratio, p50/p99, send lag, errors."""
        return {"rate": self.rate, "arrival_rate": self.arrival_rate, "requests": self.requests,
                "throughput": self.throughput,
                "in_flight": self.in_flight, "little_ratio": self.little_ratio, "p50_ms": self.percentile(50),
                "p99_ms": self.percentile(99), "max_send_lag_ms": self.max_send_lag_ms, "errors": self.errors}


@contextlib.contextmanager
def no_collection_pauses() -> Iterator[None]:
    """Run the block with the garbage collector off, after one full collection and a freeze; collect after.

    A load generator that stops to collect garbage during a run delays its sends, and the stall counts
    as the service's latency. A full collection in the client process took 130-160 ms on the book's
    machine, long enough to delay a dozen requests at the chapter's rate and push the p99 of 600 requests
    past 50 ms. Collecting before the run, freezing what survives (``gc.freeze``: the collector no longer
    scans it) and collecting again after the run keeps the pause out of the measurement.
    """
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


async def _send_on_schedule(client: httpx.AsyncClient, path: str, bodies: Sequence[dict],
                            offsets: np.ndarray) -> list[tuple[float, float, float, int]]:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05  # time to create every task before the first send

    async def one(body: dict, offset: float) -> tuple[float, float, float, int]:
        await asyncio.sleep(max(0.0, start + offset - loop.time()))
        sent = loop.time() - start
        try:
            status = (await client.post(path, json=body)).status_code
        except httpx.HTTPError:
            status = 0
        return float(offset), sent, loop.time() - start, status

    return await asyncio.gather(*(one(b, o) for b, o in zip(bodies, offsets, strict=True)))


async def _sweep(url: str, bodies: Sequence[dict], schedules: Sequence[np.ndarray], path: str, warmup: int,
                 timeout: float) -> list[list[tuple[float, float, float, int]]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        for body in bodies[:warmup]:
            await client.post(path, json=body)
        runs = []
        for offsets in schedules:
            with no_collection_pauses():
                runs.append(await _send_on_schedule(client, path, bodies, offsets))
            await asyncio.sleep(0.2)  # every answer is in (gather); a short pause between rates
        return runs


def _client_process(url: str, bodies: Sequence[dict], schedules: Sequence[np.ndarray], path: str, warmup: int,
                    timeout: float) -> list[list[tuple[float, float, float, int]]]:
    return asyncio.run(_sweep(url, bodies, schedules, path, warmup, timeout))


def open_loop_sweep(url: str, bodies: Sequence[dict], rates: Sequence[float], seed: int = 0,
                    path: str = "/search", warmup: int = 20, timeout: float = 60.0) -> list[OpenLoopResult]:
    """Send every body in ``bodies`` on a Poisson schedule at each of ``rates`` in turn; one result per rate.

    The client runs in a fresh process (``spawn``), so nothing in the caller's process can delay a send.
    The first ``warmup`` bodies are sent once, one at a time, before the first rate and not measured.
    Rate ``i`` uses schedule seed ``seed + i``.
    """
    if not bodies:
        raise ValueError("no requests to send")
    if not rates:
        raise ValueError("no arrival rates to test")
    schedules = [poisson_schedule(rate, len(bodies), seed + i) for i, rate in enumerate(rates)]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = pool.submit(_client_process, url, list(bodies), schedules, path, warmup, timeout).result()
    results = []
    for rate, rows in zip(rates, runs, strict=True):
        frame = pd.DataFrame(rows, columns=["scheduled_s", "sent_s", "done_s", "status"])
        frame["latency_ms"] = (frame["done_s"] - frame["scheduled_s"]) * 1e3
        results.append(OpenLoopResult(float(rate), frame))
    return results


def saturation(results: Sequence[OpenLoopResult]) -> float:
    """The service's capacity: the most requests per second answered at any offered rate of the sweep.

    It is the capacity only if the sweep went past the point where answers fall behind arrivals: check
    that the highest rate's ``throughput`` fell short of its ``arrival_rate`` (its ``little_ratio`` below
    1). Otherwise it is a lower bound. No error either way: a chapter does not fail on a measurement.
    """
    if not results:
        raise ValueError("no runs to read")
    return max(r.throughput for r in results)
