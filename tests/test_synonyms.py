"""The synonym probe: whether a seller's or buyer's word lands nearest its own concept's common name."""

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.synonyms import FORMS, probe_accuracy, synonym_probe
from retrieval_lib.marketplace.vocabulary import CATEGORIES, COLOURS, Term

TERMS = (
    Term("necklace", ("necklace",), ("pendant",), ("choker",)),
    Term("ring", ("ring",), ("band",), ("necklace",)),  # a buyer form that is another concept's name: skipped
    Term("mug", ("mug",), ("tumbler",), ("cuppa",)),
)
TABLE = {
    "necklace": (1.0, 0.0), "ring": (0.0, 1.0), "mug": (-1.0, 0.0),
    "pendant": (0.9, 0.1),    # nearest necklace: right
    "choker": (0.2, 0.9),     # nearest ring: wrong
    "band": (0.1, 1.0),       # nearest ring: right
    "tumbler": (-1.0, 0.2),   # nearest mug: right
    "cuppa": (-1.0, -0.3),    # nearest mug: right
}
EXPECTED = [
    ("buyer", "choker", "necklace", "ring", False),
    ("seller", "pendant", "necklace", "necklace", True),
    ("seller", "band", "ring", "ring", True),
    ("buyer", "cuppa", "mug", "mug", True),
    ("seller", "tumbler", "mug", "mug", True),
]


def _embed(table):
    return lambda texts: np.array([table[t] for t in texts], dtype=float)


def _rows(probe: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in probe[["form", "word", "concept", "nearest", "correct"]].itertuples(index=False)]


def test_the_probe_names_each_words_nearest_concept_by_hand():
    probe = synonym_probe(_embed(TABLE), TERMS)
    assert list(probe.columns) == ["form", "word", "concept", "nearest", "correct", "names"]
    assert _rows(probe) == EXPECTED
    assert probe["correct"].dtype == bool
    assert "necklace" not in set(probe["word"])  # the ring's buyer form "necklace" is a common name


def test_probe_accuracy_per_form_with_chance():
    accuracy = probe_accuracy(synonym_probe(_embed(TABLE), TERMS))
    assert accuracy["buyer"] == pytest.approx(0.5)
    assert accuracy["seller"] == pytest.approx(1.0)
    assert accuracy["chance"] == pytest.approx(1 / 3)
    assert set(accuracy.index) == {"buyer", "seller", "chance"}


def test_the_probe_asks_only_about_the_chosen_forms():
    probe = synonym_probe(_embed(TABLE), TERMS, forms=("seller",))
    assert _rows(probe) == [row for row in EXPECTED if row[0] == "seller"]
    assert set(probe_accuracy(probe).index) == {"seller", "chance"}


def test_the_embeddings_scale_does_not_matter():
    # unnormalised, a necklace ten times longer would pull the choker (0.2 * 10 > 0.9)
    scaled = {**TABLE, "necklace": (10.0, 0.0), "band": (1.0, 10.0), "mug": (-0.1, 0.0)}
    pd.testing.assert_frame_equal(synonym_probe(_embed(scaled), TERMS), synonym_probe(_embed(TABLE), TERMS))
    everything = {word: tuple(10 * x for x in vector) for word, vector in TABLE.items()}
    pd.testing.assert_frame_equal(synonym_probe(_embed(everything), TERMS), synonym_probe(_embed(TABLE), TERMS))


def test_bad_probes_are_clear_errors():
    embed = _embed(TABLE)
    for forms in (("common",), ("buyer", "colloquial")):
        with pytest.raises(ValueError, match="unknown forms"):
            synonym_probe(embed, TERMS, forms=forms)
    with pytest.raises(ValueError, match="at least two concepts"):
        synonym_probe(embed, TERMS[:1])
    with pytest.raises(ValueError, match="distinct common names"):
        synonym_probe(embed, (*TERMS, Term("chain", ("necklace",), ("pendant",), ())))
    only_names = (Term("necklace", ("necklace",), ("ring",), ()), Term("ring", ("ring",), (), ("necklace",)))
    with pytest.raises(ValueError, match="no form to probe"):
        synonym_probe(embed, only_names)


def _bag_of_characters(texts: list[str]) -> np.ndarray:
    alphabet = "abcdefghijklmnopqrstuvwxyz -"
    return np.array([[t.count(c) for c in alphabet] for t in texts], dtype=float)


@pytest.mark.parametrize("table", ["categories", "colours"])
def test_the_probe_runs_on_the_marketplaces_own_tables(table):
    terms = [t for group in CATEGORIES.values() for t in group] if table == "categories" else list(COLOURS)
    names = {t.common[0] for t in terms}
    expected = [(form, word, t.common[0]) for t in terms for form in FORMS for word in getattr(t, form)
                if word not in names]
    probe = synonym_probe(_bag_of_characters, terms)
    assert len(probe) == len(expected) and [tuple(r) for r in probe[["form", "word", "concept"]].values] == expected
    assert set(probe["nearest"]) <= names
    accuracy = probe_accuracy(probe)
    assert set(accuracy.index) == {*FORMS, "chance"}
    assert accuracy["chance"] == pytest.approx(1 / len(terms))
    assert ((accuracy >= 0) & (accuracy <= 1)).all()


def test_chance_counts_every_competing_name_even_one_with_no_form_to_probe():
    embed = lambda texts: np.array([[float(len(t)), 1.0] for t in texts])  # noqa: E731
    terms = (Term("a", ("a",), ("x",), ()), Term("b", ("b",), (), ()), Term("c", ("c",), ("y",), ()))
    assert probe_accuracy(synonym_probe(embed, terms))["chance"] == pytest.approx(1 / 3)
