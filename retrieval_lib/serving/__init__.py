"""Serving: the retriever protocol and search result, exact search, HNSW, and the request-level Retriever.

Indexes and the :class:`~retrieval_lib.serving.search.Retriever` only; the HTTP service that puts them on
the network is :mod:`retrieval_lib.service`.
"""
