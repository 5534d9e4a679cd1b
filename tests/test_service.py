"""The HTTP service, tested over HTTP: a real uvicorn process on a loopback port, started like a user would."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from retrieval_lib.models.unified import UnifiedConfig
from retrieval_lib.service.app import MAX_TOP_N
from retrieval_lib.service.loadtest import ServiceProcess, latency_breakdown, load_test, server_timing
from retrieval_lib.serving.boosting import hydrate_queries


@pytest.fixture(scope="module")
def service(tiny_system):
    """``python -m retrieval_lib.service --preset tiny`` on a free port (the system is already cached)."""
    with ServiceProcess("tiny", timeout=300) as running:
        yield running


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


def test_health(client, tiny_system):
    body = client.get("/health").json()
    assert body == {"status": "ok", "listings": len(tiny_system.listings), "dim": tiny_system.dim, "boosted": True,
                    "index_m": tiny_system.index.m, "index_ef": tiny_system.index.ef}


def test_search_returns_the_documented_schema(client, tiny_system):
    response = client.post("/search", json={"query": "silver necklace", "user_id": 2, "top_n": 7})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    results = response.json()["results"]
    assert len(results) == 7 and all(set(r) == {"listing_id", "score", "title", "taxonomy"} for r in results)
    expected = tiny_system.search("silver necklace", user_id=2, top_n=7)
    assert [r["listing_id"] for r in results] == expected["listing_id"].tolist()
    stages = server_timing(response.headers["server-timing"])
    assert set(stages) == {"query_tower", "ann", "rerank", "response"} and min(stages.values()) >= 0


def test_search_with_rerank_is_ordered_by_exact_hydrated_score(client, tiny_system):
    body = {"query": "gift for mom", "user_id": 5, "top_n": 10, "rerank": True}
    results = client.post("/search", json=body).json()["results"]
    ids = np.array([r["listing_id"] for r in results])
    q = hydrate_queries(tiny_system.encode("gift for mom", 5), tiny_system.w)
    exact = (tiny_system.items[ids] @ q[0]).numpy()
    assert (np.diff(exact) <= 1e-6).all(), "results are not in the order of their exact hydrated score"
    np.testing.assert_allclose([r["score"] for r in results], exact, atol=1e-5)


def test_anonymous_and_user_only_searches(client):
    assert len(client.post("/search", json={"query": "necklace"}).json()["results"]) == 10
    assert len(client.post("/search", json={"query": "", "user_id": 3, "level": 2}).json()["results"]) == 10


def test_query_takes_a_vector(client, tiny_system):
    vector = tiny_system.encode("wooden toy").numpy()[0].tolist()
    results = client.post("/query", json={"vector": vector, "top_n": 5, "level": 3}).json()["results"]
    assert [r["listing_id"] for r in results] == tiny_system.query(vector, 5, level=3)["listing_id"].tolist()


def test_listing(client):
    body = client.get("/listings/0").json()
    assert body["listing_id"] == 0 and body["title"] and isinstance(body["tags"], list)


#: Length of the served query vectors (the book's model config).
DIM = UnifiedConfig().out_dim


def _vector_body(n: int, first: str | None = None) -> str:
    """A raw /query body whose vector has ``n`` numbers, the first written as ``first`` (e.g. ``NaN``)."""
    numbers = ["0.1"] * n if first is None else [first] + ["0.1"] * (n - 1)
    return '{"vector": [' + ", ".join(numbers) + "]}"


BAD_REQUESTS = [
    # (method, path, raw body, expected status, words the message must contain)
    ("post", "/query", _vector_body(3), 422, "numbers"),
    ("post", "/query", _vector_body(DIM, "NaN"), 422, "vector"),
    ("post", "/query", _vector_body(DIM, "Infinity"), 422, "vector"),
    ("post", "/query", _vector_body(DIM, "-Infinity"), 422, "vector"),
    ("post", "/query", _vector_body(DIM, "1e999"), 422, "vector"),
    ("post", "/query", _vector_body(DIM, '"a"'), 422, "vector"),
    ("post", "/query", '{"vector": []}', 422, "numbers"),
    ("post", "/query", _vector_body(DIM + 1), 422, f"have {DIM}"),
    ("post", "/query", _vector_body(DIM, "3e38"), 422, "less than or equal to"),
    ("post", "/query", _vector_body(DIM, "-1e7"), 422, "greater than or equal to"),
    ("post", "/query", _vector_body(DIM, "1" + "0" * 400), 422, "vector"),
    ("post", "/query", _vector_body(20_000), 413, "bytes"),
    ("post", "/search", '{"query": "necklace", "top_n": "10"}', 422, "top_n"),
    ("post", "/search", '{"query": "necklace", "top_n": 2.5}', 422, "top_n"),
    ("post", "/search", '{"query": "necklace", "top_n": 0}', 422, "top_n"),
    ("post", "/search", '{"query": "necklace", "top_n": -3}', 422, "top_n"),
    ("post", "/search", f'{{"query": "necklace", "top_n": {MAX_TOP_N + 1}}}', 422, "top_n"),
    ("post", "/search", '{"query": "necklace", "top_n": true}', 422, "top_n"),
    ("post", "/search", '{"query": ""}', 422, "nothing to search"),
    ("post", "/search", '{"query": "   "}', 422, "nothing to search"),
    ("post", "/search", '{}', 422, "nothing to search"),
    ("post", "/search", '{"query": "necklace", "user_id": 999999}', 404, "unknown user"),
    ("post", "/search", '{"query": "necklace", "user_id": -1}', 404, "unknown user"),
    ("post", "/search", '{"query": "necklace", "user_id": "5"}', 422, "user_id"),
    ("post", "/search", '{"query": "necklace", "level": 0}', 422, "level"),
    ("post", "/search", '{"query": "necklace", "level": 6}', 422, "level"),
    ("post", "/search", '{"query": "necklace", "rerank": "yes"}', 422, "rerank"),
    ("post", "/search", '{"query": "necklace", "colour": "red"}', 422, "colour"),
    ("post", "/search", '{"query": 42}', 422, "query"),
    ("post", "/search", '{"query": "%s"}' % ("a" * 501), 422, "query"),
    ("post", "/search", '{"query": "necklace"', 422, "json"),
    ("post", "/search", '{"query": "necklace", "top_n": 1%s}' % ("0" * 5000), 400, "parsing"),
    ("post", "/search", '{"query": "\\ud800"}', 422, "query"),
    ("post", "/search", '{"query": "%s"}' % (" " * 70_000), 413, "bytes"),
    ("post", "/search", '[1, 2]', 422, "body"),
    ("post", "/search", '', 422, "body"),
    ("post", "/search", 'not json at all', 422, "json"),
    ("get", "/listings/99999999", None, 404, "unknown listing"),
    ("get", "/listings/abc", None, 422, "listing_id"),
    ("get", "/listings/99999999999999999999999", None, 404, "unknown listing"),
    ("get", "/nowhere", None, 404, "not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), BAD_REQUESTS,
                         ids=[f"{m} {p} {b!r:.40}" for m, p, b, *_ in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_a_json_message(client, method, path, body, status, words):
    headers = {"content-type": "application/json"}
    response = client.request(method.upper(), path, content=body, headers=headers)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words.lower() in json.dumps(detail).lower(), detail


def test_the_server_survives_every_bad_request(client):
    for method, path, body, *_ in BAD_REQUESTS:
        client.request(method.upper(), path, content=body, headers={"content-type": "application/json"})
    assert client.get("/health").status_code == 200
    assert client.post("/search", json={"query": "necklace"}).status_code == 200


def test_a_short_load_test(service, tiny_world):
    sessions = tiny_world.observed.split("test").head(60)
    bodies = [{"query": q, "user_id": int(u), "top_n": 10} for q, u in zip(sessions["query"], sessions["user_id"],
                                                                           strict=True)]
    result = load_test(service.url, bodies, concurrency=2, warmup=5)
    summary = result.summary()
    assert result.errors == 0 and summary["requests"] == 60 and summary["qps"] > 0
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] < 5_000
    breakdown = latency_breakdown(result)
    assert {"query_tower", "ann", "rerank", "response", "http_and_client"} <= set(breakdown.index)


def test_health_answers_within_100_ms_under_load(service, client, tiny_world):
    """Heavy searches (top 100, re-ranked, the largest ef) from four client threads; /health meanwhile."""
    sessions = tiny_world.observed.split("test").head(300)
    bodies = [{"query": q, "user_id": int(u), "top_n": MAX_TOP_N, "rerank": True, "level": 5}
              for q, u in zip(sessions["query"], sessions["user_id"], strict=True)]
    seconds, during_load = [], 0
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(load_test, service.url, bodies, concurrency=4, warmup=0)
        time.sleep(0.3)
        while not load.done() and len(seconds) < 20:
            start = time.perf_counter()
            assert client.get("/health").status_code == 200
            seconds.append(time.perf_counter() - start)
            during_load += not load.done()
            time.sleep(0.05)
        result = load.result()
    assert result.errors == 0 and during_load >= 5, (result.summary(), during_load)
    assert np.median(seconds) < 0.1 and max(seconds) < 1.0, [round(x * 1e3, 1) for x in seconds]


def test_server_timing_parsing():
    assert server_timing("a;dur=1.5, b;desc=x;dur=2, c") == {"a": 1.5, "b": 2.0}
    assert server_timing("") == {}
