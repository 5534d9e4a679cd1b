"""Serving: the retriever protocol and search result, exact search, HNSW, and the request-level Retriever."""
