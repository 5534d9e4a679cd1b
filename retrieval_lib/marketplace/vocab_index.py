"""Integer index over the vocabulary tables, and rendering of concepts into words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from retrieval_lib.marketplace import vocabulary as V

#: Kinds of surface form, as integers used in arrays.
COMMON, SELLER, BUYER = 0, 1, 2

#: Shares of listings per top-level category (a marketplace is not uniform).
CATEGORY_WEIGHTS: dict[str, float] = {
    "jewelry": 0.2, "home decor": 0.16, "art": 0.14, "clothing": 0.14,
    "bags": 0.1, "kitchen": 0.1, "stationery": 0.08, "toys": 0.08,
}


@dataclass(frozen=True)
class VocabIndex:
    """The vocabulary tables as integer-indexed arrays (built once by :func:`vocab_index`)."""

    category_names: tuple[str, ...]
    category_weights: np.ndarray
    type_terms: tuple[V.Term, ...]
    type_category: np.ndarray
    types_of_category: tuple[np.ndarray, ...]
    colour_terms: tuple[V.Term, ...]
    style_terms: tuple[V.Term, ...]
    occasion_terms: tuple[V.Term, ...]
    recipient_terms: tuple[V.Term, ...]
    aesthetic_terms: tuple[V.Term, ...]
    material_terms: tuple[tuple[V.Term, ...], ...]

    @property
    def n_types(self) -> int:
        """Number of product types (leaves of the taxonomy)."""
        return len(self.type_terms)

    @property
    def n_materials(self) -> int:
        """Number of materials per category (the same for every category)."""
        return len(self.material_terms[0])

    def facet_terms(self, facet: str, values: np.ndarray, categories: np.ndarray) -> list[V.Term]:
        """The :class:`Term` of each facet value (materials are looked up within their category)."""
        if facet == "material":
            return [self.material_terms[c][m] for c, m in zip(categories.tolist(), values.tolist(), strict=True)]
        table = {"style": self.style_terms, "colour": self.colour_terms, "recipient": self.recipient_terms,
                 "occasion": self.occasion_terms, "aesthetic": self.aesthetic_terms}[facet]
        return [table[i] for i in values.tolist()]

    def taxonomy_path(self, type_id: int) -> str:
        """The observable taxonomy path of a product type, e.g. ``'jewelry > necklace'``."""
        return f"{self.category_names[self.type_category[type_id]]} > {self.type_terms[type_id].name}"


@cache
def vocab_index() -> VocabIndex:
    """Build (once) the integer index over :mod:`retrieval_lib.marketplace.vocabulary`."""
    cats = tuple(V.CATEGORIES)
    type_terms: list[V.Term] = []
    type_category: list[int] = []
    for ci, cat in enumerate(cats):
        for term in V.CATEGORIES[cat]:
            type_terms.append(term)
            type_category.append(ci)
    tc = np.array(type_category)
    n_mat = {len(V.MATERIALS[c]) for c in cats}
    if len(n_mat) != 1:
        raise ValueError("every category must list the same number of materials")
    w = np.array([CATEGORY_WEIGHTS[c] for c in cats])
    return VocabIndex(
        category_names=cats,
        category_weights=w / w.sum(),
        type_terms=tuple(type_terms),
        type_category=tc,
        types_of_category=tuple(np.flatnonzero(tc == ci) for ci in range(len(cats))),
        colour_terms=V.COLOURS,
        style_terms=V.STYLES,
        occasion_terms=V.OCCASIONS,
        recipient_terms=V.RECIPIENTS,
        aesthetic_terms=V.AESTHETICS,
        material_terms=tuple(V.MATERIALS[c] for c in cats),
    )


def draw_form_kinds(rng: np.random.Generator, n: int, p_seller: float, p_buyer: float) -> np.ndarray:
    """Draw which kind of surface form (COMMON, SELLER or BUYER) each of ``n`` mentions uses."""
    u = rng.random(n)
    kinds = np.full(n, COMMON, dtype=np.int8)
    kinds[u < p_seller] = SELLER
    kinds[(u >= p_seller) & (u < p_seller + p_buyer)] = BUYER
    return kinds


def render(terms: list[V.Term], kinds: np.ndarray, u: np.ndarray) -> list[str]:
    """Pick one surface form per mention: ``terms[i]`` in kind ``kinds[i]``, chosen by uniform ``u[i]``."""
    out: list[str] = []
    for term, kind, x in zip(terms, kinds.tolist(), u.tolist(), strict=True):
        forms = term.common if kind == COMMON else term.seller if kind == SELLER else term.buyer
        out.append(forms[int(x * len(forms))])
    return out


def misspell(word: str, rng: np.random.Generator) -> str:
    """A plausible typo: drop, double or swap one inner character (words under 4 letters are kept)."""
    if len(word) < 4 or " " in word:
        return word
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(3))
    if op == 0:
        return word[:i] + word[i + 1:]
    if op == 1:
        return word[:i] + word[i] + word[i:]
    return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
