"""The HTTP service: the :class:`~retrieval_lib.serving.search.Retriever`'s two calls over FastAPI.

* ``POST /search`` ``{"query": "gift for mom", "user_id": 12, "top_n": 10, "rerank": true, "level": 2}``
* ``POST /query`` ``{"vector": [...], "top_n": 10, "level": 2, "rerank": false}`` (a query-tower vector)
* ``GET /listings/{listing_id}``: one listing, to read results by
* ``GET /health``: the catalogue size, the vector length and the index setting

Nothing a client sends makes a 500; every refusal is JSON with a ``detail`` message:

* **413** for a body over :data:`MAX_BODY_BYTES`, refused before it is parsed (a small ASGI middleware
  reads at most that many bytes, whatever the ``Content-Length`` says).
* **422** for a body Pydantic refuses, strictly: ``top_n`` an integer from 1 to :data:`MAX_TOP_N`,
  ``level`` one of :data:`~retrieval_lib.serving.search.EF_BY_LEVEL`, a query of at most
  :data:`MAX_QUERY_CHARS` characters, a vector of exactly the query tower's length (checked before its
  numbers are read) of finite numbers no larger than :data:`MAX_VECTOR_ENTRY` in magnitude (JSON's
  ``NaN`` and ``Infinity`` are refused, and so are entries that would overflow float32 in the index's
  arithmetic), no unknown fields. The library's ``ValueError`` is a 422 too, and an unknown user or
  listing a 404.
* **503** when the search itself fails (hnswlib's ``RuntimeError``) or returns scores that are not
  finite numbers: the server cannot answer that request, and says so rather than answer a ``NaN``.
* **500** only as a last resort, for an error nobody foresaw, still as JSON; the property-based tests
  (``tests/test_service_hardening.py``) check that no body reaches it.

Every result response carries a ``Server-Timing`` header with the milliseconds of the query tower, the
ANN search, the re-ranking and building the response (listing lookups and JSON), which the load test
reads. The CPU-bound handlers are plain functions, which FastAPI runs in its thread pool, so the event
loop stays free: ``/health`` answers while a search runs. The searches themselves run one at a time
(a lock), as before on the event loop: on one process with one torch thread, requests are served in
turn (scale out with more processes, each holding the index).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval_lib.serving.search import EF_BY_LEVEL, Retriever, UnknownUserError

#: The most results one request may ask for.
MAX_TOP_N = 100
#: The longest query text accepted, in characters.
MAX_QUERY_CHARS = 500
#: The largest request body accepted, in bytes: a vector of 2,000 numbers at full float precision fits.
MAX_BODY_BYTES = 64 * 1024
#: The longest vector any :class:`QueryRequest` may hold; an app accepts exactly its model's length.
MAX_VECTOR_LENGTH = 4096
#: The largest magnitude of a vector entry. Query-tower vectors have unit norm, so no entry exceeds 1.
#: The index computes in float32 through the MIPS-to-L2 reduction (``|q|^2 + R^2 - 2 q.p``): entries of
#: 1e19 overflow it to infinity (and NaN scores), and entries of 1e6 already round every score to a
#: multiple of millions. A thousand keeps scores within a few parts in 10,000 of the exact ones.
MAX_VECTOR_ENTRY = 1e3
#: The most validation errors a 422's message lists.
MAX_MESSAGES = 5

TopN = Annotated[int, Field(ge=1, le=MAX_TOP_N, strict=True, description=f"results to return, 1 to {MAX_TOP_N}")]
Level = Annotated[int, Field(ge=min(EF_BY_LEVEL), le=max(EF_BY_LEVEL), strict=True,
                             description="search effort (HNSW ef = EF_BY_LEVEL[level]); null: the default")] | None
Entry = Annotated[float, Field(allow_inf_nan=False, strict=True, ge=-MAX_VECTOR_ENTRY, le=MAX_VECTOR_ENTRY)]


class SearchRequest(BaseModel):
    """``POST /search``: query text, an optional known user, and how many results."""

    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, Field(max_length=MAX_QUERY_CHARS, strict=True)] = ""
    user_id: Annotated[int | None, Field(strict=True)] = None
    top_n: TopN = 10
    rerank: Annotated[bool, Field(strict=True)] = False
    level: Level = None


class QueryRequest(BaseModel):
    """``POST /query``: a query-tower vector (finite numbers, one per dimension) and how many results.

    :func:`create_app` narrows ``vector`` to exactly the served model's length, so a body with too many
    numbers is refused before the rest are read.
    """

    model_config = ConfigDict(extra="forbid")
    vector: Annotated[list[Entry], Field(min_length=1, max_length=MAX_VECTOR_LENGTH)]
    top_n: TopN = 10
    rerank: Annotated[bool, Field(strict=True)] = False
    level: Level = None


class Hit(BaseModel):
    """One result: the listing, the score it was ranked by, and what a buyer reads."""

    listing_id: int
    score: float
    title: str
    taxonomy: str


class SearchResponse(BaseModel):
    """The results, best first."""

    results: list[Hit]


class Listing(BaseModel):
    """``GET /listings/{listing_id}``."""

    listing_id: int
    title: str
    taxonomy: str
    tags: list[str]
    price: float
    rating: float | None
    review_count: int
    shop_id: int
    created_day: float


class Health(BaseModel):
    """``GET /health``."""

    status: str
    listings: int
    dim: int
    boosted: bool
    index_m: int
    index_ef: int


class BodyLimit:
    """ASGI middleware: read at most ``max_bytes`` of a request body, answer 413 beyond, else pass it on.

    A ``Content-Length`` over the limit is refused before anything is read; a body without one (chunked)
    is refused as soon as its chunks pass the limit. The app then gets the body it would have read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 for a body over the limit, else run the app with the body read so far."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the client's disconnect, as the server's receive does
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        content = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": content})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def _results(frame: pd.DataFrame, timings: dict[str, float], start: float) -> Response:
    body = SearchResponse(results=[Hit(**row) for row in frame.to_dict("records")]).model_dump_json()
    timings["response"] = (time.perf_counter() - start) * 1e3 - sum(timings.values())
    header = ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items())
    return Response(content=body, media_type="application/json", headers={"Server-Timing": header})


def _sized_query_request(dim: int) -> type[QueryRequest]:
    """:class:`QueryRequest` with ``vector`` of exactly ``dim`` numbers (its schema shows the length)."""
    if not 0 < dim <= MAX_VECTOR_LENGTH:
        raise ValueError(f"the served vectors have {dim} numbers; the service takes 1 to {MAX_VECTOR_LENGTH}")
    vector = Annotated[list[Entry], Field(min_length=dim, max_length=dim,
                                          description=f"a query-tower vector: {dim} finite numbers")]
    return create_model("QueryRequest", __base__=QueryRequest, __doc__=QueryRequest.__doc__,
                        vector=(vector, ...))


def create_app(retriever: Retriever, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI application serving ``retriever`` (built once, before the app starts).

    ``max_body_bytes`` bounds a request body (413 beyond it); a ``/query`` vector must have
    ``retriever.dim`` numbers. Searches run one at a time in FastAPI's thread pool, off the event loop.
    """
    app = FastAPI(title="retrieval_lib search", description=__doc__.split("\n\n")[0],
                  version="1.0")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    dim = retriever.dim
    sized_query = _sized_query_request(dim)
    # what /health reports, read once: a search with a `level` changes the index's ef while it runs
    health_body = Health(status="ok", listings=len(retriever.listings), dim=dim, boosted=retriever.w is not None,
                         index_m=retriever.index.m, index_ef=retriever.index.ef)
    one_at_a_time = threading.Lock()  # CPU-bound work in turn; the event loop stays free for /health

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, err: RequestValidationError) -> JSONResponse:
        messages = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            if tuple(e["loc"]) == ("body", "vector") and e["type"] in ("too_short", "too_long"):
                got = len(e["input"]) if isinstance(e.get("input"), list) else "another number of"
                messages.append(f"{where}: vector has {got} numbers, the query tower's vectors have {dim}")
            else:
                messages.append(f"{where}: {e['msg']}")
        if len(messages) > MAX_MESSAGES:
            messages = [*messages[:MAX_MESSAGES], f"and {len(messages) - MAX_MESSAGES} more"]
        return _error(422, "; ".join(messages) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        # the last resort: a JSON 500 (Starlette still logs the exception); the tests check no body gets here
        return _error(500, f"internal error ({type(err).__name__})")

    def answer(run: Callable[[dict[str, float]], pd.DataFrame]) -> Response:
        """Run one search, in turn, and map the library's errors to a status with a message."""
        try:
            with one_at_a_time:  # the clock starts when the request's turn comes: Server-Timing excludes the wait
                start, timings = time.perf_counter(), {}
                frame = run(timings)
        except UnknownUserError as err:
            return _error(404, str(err))
        except ValueError as err:
            return _error(422, str(err))
        except RuntimeError as err:  # hnswlib (and torch) report a failed search as RuntimeError
            return _error(503, f"the search failed: {err}")
        if not np.isfinite(frame["score"].to_numpy(dtype=float)).all():
            return _error(503, "the search produced scores that are not finite numbers")
        return _results(frame, timings, start)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return health_body

    @app.post("/search", response_model=SearchResponse,
              responses={404: {"description": "unknown user"}, 413: {"description": "body too large"},
                         422: {"description": "invalid request"}, 503: {"description": "the search failed"}})
    def search(request: SearchRequest) -> Response:
        return answer(lambda timings: retriever.search(request.query, request.user_id, request.top_n,
                                                       request.rerank, level=request.level, timings=timings))

    def query(request: QueryRequest) -> Response:
        return answer(lambda timings: retriever.query(request.vector, request.top_n, request.level, request.rerank,
                                                      timings))

    query.__annotations__["request"] = sized_query  # the app's own length, which a string annotation cannot name
    app.post("/query", response_model=SearchResponse,
             responses={413: {"description": "body too large"}, 422: {"description": "invalid request"},
                        503: {"description": "the search failed"}})(query)

    @app.get("/listings/{listing_id}", response_model=Listing, responses={404: {"description": "unknown listing"}})
    def listing(listing_id: int) -> Listing | JSONResponse:
        try:
            return Listing(**retriever.listing(listing_id))
        except KeyError:
            return _error(404, f"unknown listing {listing_id}")

    return app
