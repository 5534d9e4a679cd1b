"""Which synonyms an encoder knows: whether a buyer's or a seller's word lands nearest its concept's name.

The marketplace's vocabulary (chapter 1) gives every concept, a product type or a colour, a common
name ("necklace", "blue") and the forms sellers write ("pendant", "cobalt") and buyers type
("choker", "navy"). The probe embeds every form and every common name with one encoder and asks, for
each form, which concept's name is nearest by cosine. An encoder that knows the marketplace's words
puts "choker" nearest "necklace". The tables are the generator's latent truth, read here to
*explain* what an encoder learned, never by a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from retrieval_lib.marketplace.vocabulary import Term

#: The forms a probe can ask about (fields of :class:`~retrieval_lib.marketplace.vocabulary.Term`).
FORMS: tuple[str, ...] = ("buyer", "seller")


def synonym_probe(embed: Callable[[list[str]], np.ndarray], terms: Sequence[Term],
                  forms: Sequence[str] = FORMS) -> pd.DataFrame:
    """One row per (concept, form, word): the concept whose common name is nearest the word.

    ``embed`` maps a list of texts to one vector per text (any scale: rows are normalised here).
    Columns: ``form``, ``word``, ``concept``, ``nearest``, ``correct`` and ``names`` (how many concept
    names competed, the same on every row: chance is one in ``names``). Needs at least two concepts
    with distinct names; a form that is also a common name is skipped (it would match itself).
    """
    bad = sorted(set(forms) - set(FORMS))
    if bad:
        raise ValueError(f"unknown forms {bad}; choose from {FORMS}")
    names = [t.common[0] for t in terms]
    if len(set(names)) < 2 or len(set(names)) != len(names):
        raise ValueError(f"need at least two concepts with distinct common names, got {names}")
    rows = [(form, word, t.common[0]) for t in terms for form in forms for word in getattr(t, form)
            if word not in names]
    if not rows:
        raise ValueError("no form to probe")
    vectors = _unit(embed(names + [word for _, word, _ in rows]))
    scores = vectors[len(names):] @ vectors[:len(names)].T
    nearest = np.array(names)[scores.argmax(axis=1)]
    out = pd.DataFrame(rows, columns=["form", "word", "concept"])
    out["nearest"] = nearest
    out["correct"] = out["nearest"] == out["concept"]
    out["names"] = len(names)
    return out


def probe_accuracy(probe: pd.DataFrame) -> pd.Series:
    """Share of words whose nearest name is their concept's, per form (and ``chance``: one in the names)."""
    accuracy = probe.groupby("form")["correct"].mean()
    accuracy["chance"] = 1 / probe["names"].iloc[0]
    return accuracy


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
