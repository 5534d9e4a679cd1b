"""Baselines every comparison carries: BM25 (lexical retrieval) and popularity."""
