"""The service's hardening: no body reaches a 500, limits on size and magnitude, errors mapped, /health free.

In-process on the tiny system: FastAPI's TestClient for bodies (a property-based test with hypothesis over
the schemas and beyond them), and a uvicorn server in a thread for what needs real HTTP (chunked bodies,
``/health`` while searches run). ``tests/test_service.py`` runs the same app as its own process.
"""

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from retrieval_lib.models.unified import UnifiedConfig
from retrieval_lib.service.app import (
    MAX_BODY_BYTES,
    MAX_QUERY_CHARS,
    MAX_TOP_N,
    MAX_VECTOR_ENTRY,
    SearchResponse,
    create_app,
)
from retrieval_lib.service.loadtest import free_port
from retrieval_lib.serving.boosting import hydrate_queries

#: Length of the served query vectors (the book's model config, as in test_service.py).
DIM = UnifiedConfig().out_dim
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def app(tiny_system):
    return create_app(tiny_system)


@pytest.fixture(scope="module")
def client(app):
    # a 500 raises here with its traceback, so a property test that reaches one fails with the cause
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def server(app):
    """The same app on a real loopback port, served by uvicorn in a thread of this process."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.perf_counter() + 30
    while not running.started:
        assert thread.is_alive() and time.perf_counter() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{config.port}"
    running.should_exit = True
    thread.join(timeout=10)


def _check(response: httpx.Response, count: bool = False) -> None:
    """No 500; an error is JSON with a ``detail`` message; a 200 matches the schema with finite scores.

    ``count``: record the status for ``pytest --hypothesis-show-statistics`` (inside a property test).
    """
    if count:
        event(f"status {response.status_code}")
    assert response.status_code in (200, 400, 404, 413, 422), (response.status_code, response.text[:500])
    if response.status_code == 200:
        page = SearchResponse.model_validate_json(response.content)
        assert all(math.isfinite(hit.score) for hit in page.results), response.text[:500]
    else:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail, response.text[:500]


# --- property-based: arbitrary JSON, bodies close to the schemas, and raw bytes ----------------------------------

#: Any JSON value, NaN and infinities included (Python's json writes and reads them).
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
#: Numbers a vector might hold: ordinary, huge, tiny, at and just past the bound, and huge integers.
NUMBER = (st.floats(-2, 2, width=32) | st.floats() | st.integers(-(10**40), 10**40)
          | st.sampled_from([3e38, -3e38, 1e308, 5e-324, -0.0, MAX_VECTOR_ENTRY, -MAX_VECTOR_ENTRY,
                             math.nextafter(MAX_VECTOR_ENTRY, math.inf)]))
#: Finite in float32, but their squares are not: the reduction to L2 would overflow to NaN scores.
HUGE_FINITE = st.floats(1e19, 3.4e38) | st.floats(-3.4e38, -1e19)
#: Vectors of the right length, ordinary but for a few huge entries.
EXTREME_VECTORS = st.tuples(st.lists(st.floats(-1, 1, width=32), min_size=DIM, max_size=DIM),
                            st.dictionaries(st.integers(0, DIM - 1), HUGE_FINITE, min_size=1, max_size=3)).map(
    lambda drawn: [drawn[1].get(i, x) for i, x in enumerate(drawn[0])])
#: Text with lone surrogates too (JSON can escape them; they are not valid Unicode).
TEXT = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=MAX_QUERY_CHARS + 20)
VALID_OPTIONS = {"top_n": st.integers(1, MAX_TOP_N), "rerank": st.booleans(), "level": st.none() | st.integers(1, 5)}
OPTIONS = {"top_n": st.integers(-2, MAX_TOP_N + 2) | ANY_JSON, "rerank": st.booleans() | ANY_JSON,
           "level": st.none() | st.integers(-1, 7) | ANY_JSON}
#: A third valid bodies (which reach the search) or nearly (a few extreme numbers), a third near the
#: schema, a third any JSON at all.
SEARCH_BODIES = st.one_of(
    st.fixed_dictionaries({"query": st.sampled_from(["silver necklace", "gift for mom"]) | st.text(max_size=60)},
                          optional={"user_id": st.none() | st.integers(-3, 700), **VALID_OPTIONS}),
    st.fixed_dictionaries({}, optional={
        "query": st.sampled_from(["silver necklace", " ", ""]) | TEXT | ANY_JSON,
        "user_id": st.none() | st.integers(-3, 700) | st.integers() | ANY_JSON, **OPTIONS, "colour": ANY_JSON}),
    ANY_JSON)
QUERY_BODIES = st.one_of(
    st.fixed_dictionaries({"vector": st.lists(st.floats(-MAX_VECTOR_ENTRY, MAX_VECTOR_ENTRY) | st.sampled_from(
        [0.0, -0.0, 5e-324, MAX_VECTOR_ENTRY]), min_size=DIM, max_size=DIM) | EXTREME_VECTORS},
        optional=VALID_OPTIONS),
    st.fixed_dictionaries({}, optional={
        "vector": EXTREME_VECTORS | st.lists(NUMBER, max_size=DIM + 3) | ANY_JSON,
        **OPTIONS, "query": ANY_JSON}),
    ANY_JSON)
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(body=SEARCH_BODIES)
def test_no_search_body_reaches_a_500(client, body):
    _check(client.post("/search", content=json.dumps(body), headers=JSON), count=True)


@PROPERTY
@given(body=QUERY_BODIES)
@example(body={"vector": [3e38] * DIM})  # the reviewer's case: a 200 with NaN scores before the bound
@example(body={"vector": [2.0**64] + [0.0] * (DIM - 1), "rerank": True})
def test_no_query_body_reaches_a_500(client, body):
    _check(client.post("/query", content=json.dumps(body), headers=JSON), count=True)


@PROPERTY
@given(path=st.sampled_from(["/search", "/query"]), body=st.binary(max_size=300) | TEXT.map(
    lambda t: t.encode("utf-8", "surrogatepass")), content_type=st.sampled_from([None, "application/json",
                                                                                 "text/plain"]))
def test_no_raw_body_reaches_a_500(client, path, body, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    _check(client.post(path, content=body, headers=headers), count=True)


# --- the limits ---------------------------------------------------------------------------------------------------


def _padded_search(size: int) -> bytes:
    """A valid /search body of exactly ``size`` bytes (JSON allows the spaces)."""
    body = b'{"query": "silver necklace"}'
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_over_the_limit_is_refused_with_413(client):
    assert client.post("/search", content=_padded_search(MAX_BODY_BYTES), headers=JSON).status_code == 200
    response = client.post("/search", content=_padded_search(MAX_BODY_BYTES + 1), headers=JSON)
    assert response.status_code == 413 and f"{MAX_BODY_BYTES} bytes" in response.json()["detail"]
    huge_vector = '{"vector": [' + ", ".join(["0.1"] * 100_000) + "]}"
    response = client.post("/query", content=huge_vector, headers=JSON)
    assert response.status_code == 413 and "bytes" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_is_refused_with_413(server):
    def chunks():  # no Content-Length: the limit counts the bytes as they come
        yield b'{"query": "silver necklace"'
        for _ in range(MAX_BODY_BYTES // 1000 + 1):
            yield b" " * 1000
        yield b"}"

    response = httpx.post(f"{server}/search", content=chunks(), headers=JSON, timeout=30)
    assert response.status_code == 413 and "bytes" in response.json()["detail"]
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200


def test_a_vector_of_the_wrong_length_names_the_expected_length(client):
    for n in (DIM - 1, DIM + 1, 5 * DIM):
        response = client.post("/query", json={"vector": [0.1] * n})
        assert response.status_code == 422
        assert f"has {n} numbers" in response.json()["detail"] and str(DIM) in response.json()["detail"]


def test_huge_finite_entries_are_refused_not_answered_with_nan(client):
    for entry in (3e38, -3e38, 1e19, math.nextafter(MAX_VECTOR_ENTRY, math.inf)):
        response = client.post("/query", json={"vector": [entry] * DIM, "rerank": True})
        assert response.status_code == 422, response.text[:300]
        detail = response.json()["detail"]
        assert "vector" in detail and "more" in detail  # a message per entry, cut after a few


def test_entries_at_the_bound_give_finite_and_nearly_exact_scores(client, tiny_system):
    v = tiny_system.encode("silver necklace").numpy()[0]
    q = (v * (MAX_VECTOR_ENTRY / np.abs(v).max())).astype(np.float64)
    q = np.clip(q, -MAX_VECTOR_ENTRY, MAX_VECTOR_ENTRY).tolist()
    response = client.post("/query", json={"vector": q, "top_n": 10})
    _check(response)
    hits = response.json()["results"]
    ids = np.array([h["listing_id"] for h in hits])
    exact = (tiny_system.items[ids] @ hydrate_queries(torch.tensor([q], dtype=torch.float32), tiny_system.w)[0])
    np.testing.assert_allclose([h["score"] for h in hits], exact.numpy(), rtol=0, atol=1e-3 * np.abs(exact).max())


def test_scores_that_are_not_finite_get_503_not_200(client, tiny_system, monkeypatch):
    real = tiny_system.query

    def nan_scores(*args, **kwargs):
        frame = real(*args, **kwargs)
        frame.loc[0, "score"] = np.nan
        return frame

    monkeypatch.setattr(tiny_system, "query", nan_scores)
    for path, body in (("/search", {"query": "necklace"}), ("/query", {"vector": [0.1] * DIM})):
        response = client.post(path, json=body)
        assert response.status_code == 503 and "not finite" in response.json()["detail"]


# --- library errors -----------------------------------------------------------------------------------------------


def test_an_index_runtime_error_is_a_503_with_a_message(client, tiny_system, monkeypatch):
    message = "Cannot return the results in a contiguous 2D array. Probably ef or M is too small"

    def failing(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(tiny_system.index, "search", failing)
    for path, body in (("/search", {"query": "necklace"}), ("/query", {"vector": [0.1] * DIM})):
        response = client.post(path, json=body)
        assert response.status_code == 503 and message in response.json()["detail"], response.text
    monkeypatch.undo()
    assert client.post("/search", json={"query": "necklace"}).status_code == 200
    assert tiny_system.index.ef == client.get("/health").json()["index_ef"]


def test_a_retriever_value_error_is_a_422(client, tiny_system, monkeypatch):
    def refusing(*args, **kwargs):
        raise ValueError("query vectors contain NaN or infinity")

    monkeypatch.setattr(tiny_system, "query", refusing)
    response = client.post("/query", json={"vector": [0.1] * DIM})
    assert response.status_code == 422 and "NaN" in response.json()["detail"]


def test_an_unforeseen_error_is_still_a_json_500(app, tiny_system, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tiny_system, "query", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/query", json={"vector": [0.1] * DIM})
    assert response.status_code == 500 and response.json() == {"detail": "internal error (ZeroDivisionError)"}


# --- /health while searches run -----------------------------------------------------------------------------------


def test_health_answers_within_100_ms_while_searches_run(server, tiny_system, monkeypatch):
    """Four requests whose search takes a second of real search work each; /health meanwhile."""
    real, running = tiny_system.query, threading.Event()

    def slow(*args, **kwargs):
        running.set()
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            frame = real(*args, **kwargs)
        return frame

    monkeypatch.setattr(tiny_system, "query", slow)
    with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=server, timeout=5) as health_client:
        slow_requests = [pool.submit(httpx.post, f"{server}/search", json={"query": "necklace", "rerank": True},
                                     timeout=60) for _ in range(4)]
        assert running.wait(timeout=30)
        seconds = []
        for _ in range(5):
            start = time.perf_counter()
            assert health_client.get("/health").status_code == 200
            seconds.append(time.perf_counter() - start)
        still_running = sum(not f.done() for f in slow_requests)
        statuses = [f.result().status_code for f in slow_requests]
    assert still_running >= 2, "the searches ended before /health was measured"
    assert statuses == [200] * 4
    assert sorted(seconds)[len(seconds) // 2] < 0.1, f"/health took {[round(s * 1e3) for s in seconds]} ms"
    assert max(seconds) < 0.5, f"/health took {[round(s * 1e3) for s in seconds]} ms"
