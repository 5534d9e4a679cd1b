import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.encoders.term import TermEncoder
from retrieval_lib.evaluation.logged import logged_recall
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.term_tower import TermConfig, TermRetriever, TermTwoTower, fit_term_model
from retrieval_lib.text.hashing import HashedTexts, collision_rate, hash_bucket, hash_texts, ngram_features
from retrieval_lib.training.pairs import engaged_pairs, validation_pairs
from retrieval_lib.training.trainer import TrainConfig


def test_ngram_features_by_hand():
    assert ngram_features("Red mug") == ["u:red", "u:mug", "b:red_mug", "c:#re", "c:red", "c:ed#", "c:#mu",
                                         "c:mug", "c:ug#"]
    assert ngram_features("for the", ("unigram",)) == []
    with pytest.raises(ValueError):
        ngram_features("x", ("fourgram",))


def test_trigrams_survive_a_typo():
    a, b = set(ngram_features("necklace", ("trigram",))), set(ngram_features("neckalce", ("trigram",)))
    assert len(a & b) / len(a) >= 0.5
    assert not set(ngram_features("necklace", ("unigram",))) & set(ngram_features("neckalce", ("unigram",)))


def test_hashing_is_stable_across_processes_and_hash_seeds():
    code = ("from retrieval_lib.text.hashing import hash_bucket; "
            "print([hash_bucket(w, 1000) for w in ['u:ring', 'c:#ri']])")
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip())
    assert outputs == {str([hash_bucket("u:ring", 1000), hash_bucket("c:#ri", 1000)])}


def test_hash_texts_layout_and_empty_texts():
    ids, offsets = hash_texts(["red mug", "", "for"], 100)
    assert offsets.tolist() == [0, 9, 9]
    assert ids.min() >= 0 and ids.max() < 100
    with pytest.raises(TypeError):
        hash_texts("red mug", 100)
    with pytest.raises(ValueError):
        hash_bucket("x", 0)


def test_collision_rate_falls_with_buckets():
    features = [f"u:word{i}" for i in range(2000)]
    assert collision_rate(features, 2**8) > collision_rate(features, 2**12) > collision_rate(features, 2**20)
    assert collision_rate([], 10) == 0.0
    assert collision_rate(["a", "b"], 1) == 1.0


def test_hashed_texts_select_matches_hashing_the_subset():
    texts = ["red mug", "blue bowl for mom", "", "silver ring"]
    table = HashedTexts.of(texts, 1000)
    ids, offsets = table.select(np.array([3, 1, 2]))
    ref_ids, ref_offsets = hash_texts([texts[3], texts[1], texts[2]], 1000)
    assert ids.tolist() == ref_ids.tolist() and offsets.tolist() == ref_offsets.tolist()


def test_term_encoder_means_bucket_embeddings():
    enc = TermEncoder(n_buckets=10, dim=2)
    with torch.no_grad():
        enc.bag.weight.copy_(torch.arange(20.0).reshape(10, 2))
    out = enc(torch.tensor([1, 3, 5]), torch.tensor([0, 2]))
    torch.testing.assert_close(out, torch.tensor([[4.0, 5.0], [10.0, 11.0]]))
    with pytest.raises(ValueError):
        TermEncoder(n_buckets=0)
    with pytest.raises(ValueError, match="kinds"):
        TermConfig(kinds=())


TINY_TERM = TermConfig(n_buckets=2**14, dim=32, out_dim=32)


@pytest.fixture(scope="module")
def tiny_term(tiny_world):
    model, history = fit_term_model(tiny_world.observed, TINY_TERM, TrainConfig(epochs=8, patience=2), progress=False)
    return model, history


def test_training_beats_the_untrained_model_on_validation(tiny_world, tiny_term):
    model, history = tiny_term
    torch.manual_seed(0)
    untrained = TermRetriever(TermTwoTower(TINY_TERM), tiny_world.observed.listings)
    before = logged_recall(untrained, validation_pairs(tiny_world.observed))
    assert history.best_score > before + 0.1, (before, history.valid_score)
    assert history.train_loss[-1] < 0.8 * history.train_loss[0]
    assert history.best_score == max(history.valid_score)


def test_term_model_trains_and_beats_bm25_on_tail_queries(tiny_world, tiny_term):
    model, history = tiny_term
    es = EvaluationSet.build(tiny_world, "test")
    term = evaluate(TermRetriever(model, tiny_world.observed.listings), es)
    bm25 = evaluate(BM25Retriever().fit(tiny_world.observed.listings), es)
    assert term.value("recall@100", "tail") > bm25.value("recall@100", "tail")


def test_term_retriever_handles_empty_and_unknown_queries(tiny_world, tiny_term):
    retriever = TermRetriever(tiny_term[0], tiny_world.observed.listings)
    ids = retriever.retrieve(pd.DataFrame({"query": ["", "qqqq zzzz", "necklace"]}), 10)
    assert ids.shape == (3, 10) and (ids >= 0).all()  # an empty query still gets a (query-less) ranking
    with pytest.raises(ValueError, match="bags"):
        TermRetriever(tiny_term[0], tiny_world.observed.listings, HashedTexts.of(["x"], 2**14))


def test_engaged_pairs_are_training_engagement(tiny_world):
    pairs = engaged_pairs(tiny_world.observed, "train")
    logs = tiny_world.observed.logs("train")
    assert len(pairs) == int((logs.click | logs.cart | logs.purchase).sum())


def test_same_seed_same_term_model(tiny_world, tiny_term):
    again, _ = fit_term_model(tiny_world.observed, TermConfig(n_buckets=2**14, dim=32, out_dim=32),
                              TrainConfig(epochs=8, patience=2), progress=False)
    for (name, a), (_, b) in zip(tiny_term[0].state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
