"""The HTTP service: the :class:`~retrieval_lib.serving.search.Retriever`'s two calls over FastAPI.

* ``POST /search`` ``{"query": "gift for mom", "user_id": 12, "top_n": 10, "rerank": true, "level": 2}``
* ``POST /query`` ``{"vector": [...], "top_n": 10, "level": 2, "rerank": false}`` (a query-tower vector)
* ``GET /listings/{listing_id}``: one listing, to read results by
* ``GET /health``: the catalogue size, the vector length and the index setting

Bodies are validated by Pydantic, strictly: ``top_n`` must be an integer from 1 to :data:`MAX_TOP_N`,
``level`` one of :data:`~retrieval_lib.serving.search.EF_BY_LEVEL`, a vector finite numbers (JSON's
``NaN`` and ``Infinity`` are refused), unknown fields are refused. A bad body gets 422, an unknown user
or listing 404, always as JSON with a ``detail`` message; nothing a client sends makes a 500. Every
result response carries a ``Server-Timing`` header with the milliseconds of the query tower, the ANN
search, the re-ranking and building the response (listing lookups and JSON), which the load test reads.
The handlers run one at a time on the event loop: the work is CPU-bound, and one process on one thread
serves requests in turn (scale out with more processes, each holding the index).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from retrieval_lib.serving.search import EF_BY_LEVEL, Retriever, UnknownUserError

#: The most results one request may ask for.
MAX_TOP_N = 100
#: The longest query text accepted, in characters.
MAX_QUERY_CHARS = 500

TopN = Annotated[int, Field(ge=1, le=MAX_TOP_N, strict=True, description=f"results to return, 1 to {MAX_TOP_N}")]
Level = Annotated[int, Field(ge=min(EF_BY_LEVEL), le=max(EF_BY_LEVEL), strict=True,
                             description="search effort (HNSW ef = EF_BY_LEVEL[level]); null: the default")] | None


class SearchRequest(BaseModel):
    """``POST /search``: query text, an optional known user, and how many results."""

    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, Field(max_length=MAX_QUERY_CHARS, strict=True)] = ""
    user_id: Annotated[int | None, Field(strict=True)] = None
    top_n: TopN = 10
    rerank: Annotated[bool, Field(strict=True)] = False
    level: Level = None


class QueryRequest(BaseModel):
    """``POST /query``: a query-tower vector (finite numbers, one per dimension)."""

    model_config = ConfigDict(extra="forbid")
    vector: list[Annotated[float, Field(allow_inf_nan=False, strict=True)]]
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message})


def _results(frame: object, timings: dict[str, float], start: float) -> Response:
    body = SearchResponse(results=[Hit(**row) for row in frame.to_dict("records")]).model_dump_json()
    timings["response"] = (time.perf_counter() - start) * 1e3 - sum(timings.values())
    header = ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items())
    return Response(content=body, media_type="application/json", headers={"Server-Timing": header})


def create_app(retriever: Retriever) -> FastAPI:
    """The FastAPI application serving ``retriever`` (built once, before the app starts)."""
    app = FastAPI(title="retrieval_lib search", description=__doc__.split("\n\n")[0],
                  version="1.0")

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, err: RequestValidationError) -> JSONResponse:
        messages = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        return _error(422, "; ".join(messages) or "invalid request")

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", listings=len(retriever.listings), dim=retriever.dim,
                      boosted=retriever.w is not None, index_m=retriever.index.m, index_ef=retriever.index.ef)

    @app.post("/search", response_model=SearchResponse,
              responses={404: {"description": "unknown user"}, 422: {"description": "invalid request"}})
    async def search(request: SearchRequest) -> Response:
        start, timings = time.perf_counter(), {}
        try:
            frame = retriever.search(request.query, request.user_id, request.top_n, request.rerank,
                                     level=request.level, timings=timings)
        except UnknownUserError as err:
            return _error(404, str(err))
        except ValueError as err:
            return _error(422, str(err))
        return _results(frame, timings, start)

    @app.post("/query", response_model=SearchResponse, responses={422: {"description": "invalid request"}})
    async def query(request: QueryRequest) -> Response:
        start, timings = time.perf_counter(), {}
        if len(request.vector) != retriever.dim:
            return _error(422, f"vector has {len(request.vector)} numbers, the query tower's vectors have "
                               f"{retriever.dim}")
        try:
            frame = retriever.query(request.vector, request.top_n, request.level, request.rerank, timings)
        except ValueError as err:
            return _error(422, str(err))
        return _results(frame, timings, start)

    @app.get("/listings/{listing_id}", response_model=Listing, responses={404: {"description": "unknown listing"}})
    async def listing(listing_id: int) -> Listing | JSONResponse:
        try:
            return Listing(**retriever.listing(listing_id))
        except KeyError:
            return _error(404, f"unknown listing {listing_id}")

    return app
