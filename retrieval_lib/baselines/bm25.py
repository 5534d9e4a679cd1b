"""BM25 lexical retrieval: the production baseline every learned model must beat.

Scoring is done by ``bm25s`` (sparse-matrix BM25, Lucene variant); this module adds the book's
tokeniser, listing documents, padding conventions and the retriever interface used by
:mod:`retrieval_lib.evaluation.offline`.
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from retrieval_lib.serving.base import PAD, SearchResult, per_unique_query
from retrieval_lib.text.words import listing_documents, tokenize, tokenize_many, vocabulary


class BM25Retriever:
    """Okapi BM25 over each listing's title, tags and taxonomy path.

    Parameters
    ----------
    k1, b : float
        The usual BM25 term-saturation and length-normalisation parameters.
    n_threads : int
        Threads for batch search (``-1``: all cores). Results do not depend on it.

    Examples
    --------
    >>> bm25 = BM25Retriever().fit(world.observed.listings)          # doctest: +SKIP
    >>> ids, scores = bm25.search(["silver necklace"], k=10)          # doctest: +SKIP
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75, n_threads: int = 1) -> None:
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if n_threads == 0 or n_threads < -1:
            raise ValueError(f"n_threads must be positive or -1 (all cores), got {n_threads}")
        self.k1, self.b, self.n_threads = k1, b, n_threads
        self._model: bm25s.BM25 | None = None
        self.listing_ids: np.ndarray = np.empty(0, dtype=np.int64)
        self.vocabulary: frozenset[str] = frozenset()

    def fit(self, listings: pd.DataFrame) -> BM25Retriever:
        """Index the listings' text (any table with ``listing_id``, ``title``, ``tags``, ``taxonomy``)."""
        if len(listings) == 0:
            raise ValueError("cannot index an empty listing table")
        tokens = tokenize_many(listing_documents(listings))
        model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        model.index(tokens, show_progress=False)
        self._model = model
        self.listing_ids = listings["listing_id"].to_numpy(dtype=np.int64)
        self.vocabulary = frozenset(vocabulary(tokens))
        return self

    def search(self, queries: Sequence[str], k: int = 100, progress: bool = False) -> SearchResult:
        """Top-``k`` listings per query (``progress`` shows a progress bar for long batches).

        Returns
        -------
        SearchResult
            ``ids`` and ``scores``.
        ids : np.ndarray
            ``(len(queries), k)`` listing ids, best first, padded with :data:`PAD` where fewer than
            ``k`` listings share a word with the query (an empty or all-unknown query gets only padding).
        scores : np.ndarray
            The matching BM25 scores, 0 at padded positions.
        """
        if self._model is None:
            raise RuntimeError("call fit() before search()")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if isinstance(queries, str):
            raise TypeError("search() takes a sequence of queries; wrap a single query in a list")
        ids = np.full((len(queries), k), PAD, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        tokens = [[t for t in q if t in self.vocabulary] for q in tokenize_many(queries)]
        known = [i for i, t in enumerate(tokens) if t]
        if not known:
            return SearchResult(ids, scores)
        kk = min(k, len(self.listing_ids))
        docs, sc = self._model.retrieve([tokens[i] for i in known], k=kk, show_progress=progress,
                                        n_threads=self.n_threads)
        hit = sc > 0
        rows = np.asarray(known)
        ids[rows, :kk] = np.where(hit, self.listing_ids[docs], PAD)
        scores[rows, :kk] = np.where(hit, sc, 0.0)
        return SearchResult(ids, scores)

    def n_matches(self, queries: Sequence[str]) -> np.ndarray:
        """How many listings share at least one word with each query (the size of its lexical match set)."""
        if self._model is None:
            raise RuntimeError("call fit() before n_matches()")
        if isinstance(queries, str):
            raise TypeError("n_matches() takes a sequence of queries; wrap a single query in a list")
        out = np.zeros(len(queries), dtype=np.int64)
        for i, tokens in enumerate(tokenize_many(queries)):
            known = [t for t in tokens if t in self.vocabulary]
            if known:
                out[i] = int((self._model.get_scores(known) > 0).sum())
        return out

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids for each session's query (the user is ignored)."""
        return per_unique_query(sessions, lambda queries: self.search(queries, k).ids)


def tfidf_vectors(listings: pd.DataFrame) -> sparse.csr_matrix:
    """L2-normalised TF-IDF vectors of the listings' text (the book's tokenizer), one row per listing.

    A purely lexical notion of similarity, to compare learned embeddings against.
    """
    vectorizer = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, norm="l2")
    return vectorizer.fit_transform(listing_documents(listings)).tocsr()
