"""The HTTP service over the served system: the app, its command and its load tests.

Index code (the ANN indexes, boosting, the :class:`~retrieval_lib.serving.search.Retriever`) lives in
:mod:`retrieval_lib.serving` and knows nothing of HTTP; this package puts it on the network:
:mod:`retrieval_lib.service.app` (the FastAPI app, its schemas and limits),
:mod:`retrieval_lib.service.__main__` (``python -m retrieval_lib.service``),
:mod:`retrieval_lib.service.loadtest` (the service in its own process, measured over HTTP) and
:mod:`retrieval_lib.service.open_loop` (an open-loop load test on a fixed Poisson schedule).
"""
