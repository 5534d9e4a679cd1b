"""Words: normalisation and tokenisation shared by every text model, and word-overlap measures.

One tokenizer for the lexical baseline and the learned models keeps comparisons fair: BM25 and
the term encoder see exactly the same words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

#: A deliberately small stop list: words that carry no product meaning in a query or a title.
STOPWORDS: frozenset[str] = frozenset(
    "a an and the for of with in on to by at from or is are my your this that".split()
)


_TOKEN = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case, strip accents and collapse white space."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.lower().split())


def tokenize(text: str, drop_stopwords: bool = True) -> list[str]:
    """Split normalised text into alphanumeric tokens (``"T-Shirt for Mom"`` -> ``['t', 'shirt', 'mom']``)."""
    tokens = _TOKEN.findall(normalize(text))
    if drop_stopwords:
        tokens = [t for t in tokens if t not in STOPWORDS]
    return tokens


def tokenize_many(texts: Iterable[str], drop_stopwords: bool = True) -> list[list[str]]:
    """Tokenise a batch of texts."""
    return [tokenize(t, drop_stopwords) for t in texts]


def listing_documents(listings: pd.DataFrame) -> list[str]:
    """The searchable text of each listing: title, tags and taxonomy path, as one string."""
    missing = {"title", "tags", "taxonomy"} - set(listings.columns)
    if missing:
        raise ValueError(f"listings lack the text columns {sorted(missing)}")
    return [f"{title} | {' | '.join(tags)} | {taxonomy}"
            for title, tags, taxonomy in zip(listings["title"], listings["tags"], listings["taxonomy"],
                                             strict=True)]


def vocabulary(token_lists: Sequence[Sequence[str]]) -> set[str]:
    """All distinct tokens of a tokenised corpus."""
    return {t for tokens in token_lists for t in tokens}


def missing_words(query: str, document: str) -> list[str]:
    """Query tokens that do not occur in the document: the words a lexical matcher cannot use."""
    doc = set(tokenize(document))
    return [t for t in tokenize(query) if t not in doc]


def word_overlap(query: str, document: str) -> float:
    """Share of the query's tokens that occur in the document (``nan`` for a query with no tokens)."""
    tokens = tokenize(query)
    if not tokens:
        return float("nan")
    return 1.0 - len(missing_words(query, document)) / len(tokens)


def new_words(query: str, document: str) -> list[str]:
    """Words of a (generated) query that the document does not contain, stop words included.

    Unlike :func:`missing_words` it splits the query on white space and keeps stop words, because it
    measures what a generator *wrote*: doc2query's new words are the buyer vocabulary it adds.
    """
    own = set(tokenize(document, drop_stopwords=False))
    return [w for w in query.split() if w not in own]


def new_word_shares(queries: Sequence[str], documents: Sequence[str]) -> tuple[float, float]:
    """Share of all query words absent from their document, and share of queries with at least one."""
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
    new = [len(new_words(q, d)) for q, d in zip(queries, documents, strict=True)]
    words = sum(len(q.split()) for q in queries)
    return sum(new) / max(1, words), float(np.mean([n > 0 for n in new])) if new else float("nan")
