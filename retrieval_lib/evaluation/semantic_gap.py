"""The semantic gap as a slice of the test sessions: queries that share no word with the wanted listing.

Chapter 2 showed the gap with examples; here it becomes a measurable slice. A session falls in the
*no shared word* slice when none of its query's words occurs in the title, tags or taxonomy of the
listing the buyer wanted. No lexical retriever can match such a pair on words; only a model that
knows that different words mean the same thing can. The wanted listing is latent truth, read here to
*slice the evaluation*, never by a model.
"""

from __future__ import annotations

import numpy as np

from retrieval_lib.evaluation.offline import EvaluationSet
from retrieval_lib.text.words import listing_documents, word_overlap

#: The two slices, in the order a table shows them.
GAP_SLICES: tuple[str, ...] = ("no shared word", "shared word")


def query_listing_overlap(eval_set: EvaluationSet) -> np.ndarray:
    """Per session (row order of ``eval_set.sessions``): the share of query words in the wanted listing's text."""
    docs = listing_documents(eval_set.world.observed.listings)
    queries = eval_set.sessions["query"].astype(str).to_numpy()
    return np.array([word_overlap(q, docs[t]) for q, t in zip(queries, eval_set.targets, strict=True)])


def gap_slices(eval_set: EvaluationSet) -> dict[str, np.ndarray]:
    """Boolean session masks: ``no shared word`` (overlap 0, the semantic gap) and ``shared word``.

    A query with no word at all (only stop words or symbols) belongs to neither.
    """
    overlap = query_listing_overlap(eval_set)
    return dict(zip(GAP_SLICES, (overlap == 0, overlap > 0), strict=True))
