"""The open-loop load test: its schedule, its bookkeeping, and a server whose capacity is known by design."""

import gc
import json
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.service.open_loop import (
    KEEPALIVE_EXPIRY,
    OpenLoopResult,
    no_collection_pauses,
    open_loop_sweep,
    poisson_schedule,
    saturation,
)

SERVICE_SECONDS = 0.02  # the stub answers one request at a time, each after 20 ms: capacity 50 per second


class _SlowHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the name http.server calls)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(SERVICE_SECONDS)
        body = json.dumps({"results": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _SerialServer(HTTPServer):
    request_queue_size = 1024  # every scheduled connection waits in the backlog, none is refused


@pytest.fixture(scope="module")
def slow_server():
    server = _SerialServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_poisson_schedule():
    times = poisson_schedule(200.0, 20_000, seed=3)
    assert times[0] == 0 and (np.diff(times) > 0).all() and len(times) == 20_000
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.03)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.05)  # exponential gaps: sd equals the mean
    np.testing.assert_array_equal(times, poisson_schedule(200.0, 20_000, seed=3))
    assert not np.array_equal(times, poisson_schedule(200.0, 20_000, seed=4))
    assert poisson_schedule(5.0, 1).tolist() == [0.0]
    for rate in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rate"):
            poisson_schedule(rate, 10)
    with pytest.raises(ValueError, match="n must be positive"):
        poisson_schedule(10.0, 0)


def _result(scheduled, done, rate=1.0, status=200):
    frame = pd.DataFrame({"scheduled_s": scheduled, "sent_s": scheduled, "done_s": done, "status": status})
    frame["latency_ms"] = (frame["done_s"] - frame["scheduled_s"]) * 1e3
    return OpenLoopResult(rate, frame)


def test_the_bookkeeping_by_hand():
    # three requests a second apart, each answered half a second after its scheduled time
    r = _result([0.0, 1.0, 2.0], [0.5, 1.5, 2.5])
    assert r.requests == 3 and r.errors == 0
    assert r.seconds == pytest.approx(2.5) and r.throughput == pytest.approx(3 / 2.5)
    assert r.arrival_rate == pytest.approx(1.0)
    assert r.in_flight == pytest.approx(1.5 / 2.5)  # 1.5 request-seconds over 2.5 seconds
    assert r.little_ratio == pytest.approx(0.6 / (1.0 * 0.5))
    assert r.percentile(50) == pytest.approx(500) and r.max_send_lag_ms == 0
    summary = r.summary()
    assert summary["p99_ms"] == pytest.approx(500) and summary["errors"] == 0
    assert _result([0.0, 1.0], [0.5, 1.5], status=0).errors == 2


def test_saturation_is_the_most_answered_per_second():
    kept_up = _result(np.arange(100) * 0.01, np.arange(100) * 0.01 + 0.005, rate=100)
    behind = _result(np.arange(100) * 0.005, 0.02 * np.arange(1, 101), rate=200)  # answers at 50 per second
    assert behind.throughput == pytest.approx(50, rel=0.01) and kept_up.throughput > 99
    assert saturation([kept_up, behind]) == kept_up.throughput
    # the highest rate shows whether the sweep went past the capacity: here it did
    assert behind.throughput < 0.5 * behind.arrival_rate and behind.little_ratio < 0.6
    assert kept_up.little_ratio == pytest.approx(1, abs=0.02)
    with pytest.raises(ValueError, match="no runs"):
        saturation([])


def test_a_server_of_known_capacity(slow_server):
    """Below capacity latency is the service time and Little's law holds; above it the queue grows."""
    bodies = [{"query": f"q{i}"} for i in range(100)]
    capacity = 1 / SERVICE_SECONDS
    light, heavy = open_loop_sweep(slow_server, bodies, [0.4 * capacity, 2 * capacity], warmup=3)
    for run in (light, heavy):
        assert run.requests == 100 and run.errors == 0
        assert run.frame["latency_ms"].min() >= SERVICE_SECONDS * 1e3 * 0.95
        assert run.max_send_lag_ms < 50  # the client sent on time, whatever the server did
    assert light.percentile(50) < 3 * SERVICE_SECONDS * 1e3
    assert light.throughput == pytest.approx(light.arrival_rate, rel=0.1)
    assert light.little_ratio == pytest.approx(1, abs=0.1)
    # twice the capacity: answers come at the capacity, the queue grows all along, latency with it
    assert heavy.throughput == pytest.approx(capacity, rel=0.15)
    assert heavy.little_ratio < 0.8
    first, last = heavy.frame["latency_ms"].iloc[:5].mean(), heavy.frame["latency_ms"].iloc[-5:].mean()
    assert last > 10 * first
    assert saturation([light, heavy]) == pytest.approx(capacity, rel=0.15)


def test_bad_sweeps_are_clear_errors(slow_server):
    with pytest.raises(ValueError, match="no requests"):
        open_loop_sweep(slow_server, [], [10.0])
    with pytest.raises(ValueError, match="no arrival rates"):
        open_loop_sweep(slow_server, [{"query": "x"}], [])


def test_the_client_drops_idle_connections_before_the_server_does():
    # at equal keep-alive timeouts a reused connection can meet the server's close: a ReadError in the sweep
    import uvicorn

    from retrieval_lib.service.app import create_app

    assert uvicorn.Config(create_app).timeout_keep_alive >= 4 * KEEPALIVE_EXPIRY


def test_the_client_does_not_stop_to_collect_garbage_during_a_run():
    # a full collection mid-run (130-160 ms in the book's client) would count as the service's latency
    class Node:
        pass

    assert gc.isenabled()
    try:
        with no_collection_pauses():
            assert not gc.isenabled()
            assert gc.get_freeze_count() > 1000  # what lived before the run is frozen, never scanned
            node = Node()
            node.self = node  # a cycle: garbage only a collection frees
            alive = weakref.ref(node)
            del node
            assert alive() is not None  # not collected during the run
        assert gc.isenabled()
        assert alive() is None  # collected after the run, outside the measurement
        with pytest.raises(RuntimeError), no_collection_pauses():
            raise RuntimeError("a failed run")
        assert gc.isenabled()  # the collector comes back on after a failure too
    finally:
        gc.unfreeze()
