import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.encoders.transformer import TransformerConfig
from retrieval_lib.text.wordpiece import TokenizedTexts
from retrieval_lib.text.words import listing_documents
from retrieval_lib.training.pretraining import (
    Doc2QueryData,
    doc2query_model,
    fit_doc2query,
    generate_queries,
    listing_tokenizer,
    mean_loss,
    pretraining_pairs,
    purchase_pairs,
    tokenizer_corpus,
)
from retrieval_lib.training.trainer import TrainConfig

CONFIG = TransformerConfig(vocab_size=1000, dim=32, heads=4, layers=1, ff_dim=64, max_len=40)
TRAIN = TrainConfig(epochs=4, batch_size=64, lr=3e-3, patience=2)


@pytest.fixture(scope="module")
def pretrained(tiny_world, tiny_tokenizer):
    return fit_doc2query(tiny_world.observed, tiny_tokenizer, CONFIG, TRAIN, progress=False)


def test_purchase_pairs_are_the_windows_purchases(tiny_world):
    observed = tiny_world.observed
    for split in ("train", "valid"):
        pairs = purchase_pairs(observed, split)
        logs = observed.logs(split)
        assert len(pairs) == int(logs["purchase"].sum()) > 0
        assert set(pairs["query"]) <= set(observed.split(split)["query"])


def test_pretraining_reads_the_archive_then_the_training_window(tiny_world):
    observed = tiny_world.observed
    archive = purchase_pairs(observed, "archive")
    assert len(archive) == int(observed.archive["purchase"].sum()) > len(purchase_pairs(observed, "train")) > 0
    assert (observed.archive["day"] < 0).all()  # the archive ends where the logged windows begin
    pairs = pretraining_pairs(observed)
    pd.testing.assert_frame_equal(pairs.iloc[: len(archive)].reset_index(drop=True), archive)
    pd.testing.assert_frame_equal(pairs.iloc[len(archive):].reset_index(drop=True), purchase_pairs(observed, "train"))


def test_tokenizer_learns_from_the_archive_and_the_training_window_only(tiny_world):
    observed = tiny_world.observed
    corpus = tokenizer_corpus(observed)
    later = observed.listings[observed.listings["created_day"] >= observed.train_end]
    assert len(later) > 0 and not set(listing_documents(later)) <= set(corpus)
    n_known = int((observed.listings["created_day"] < observed.train_end).sum())
    bought = observed.archive.loc[observed.archive["purchase"], "query"].astype(str).tolist()
    queries = bought + observed.split("train")["query"].astype(str).tolist()
    assert corpus[n_known:] == queries


def test_tokenizer_is_cached_and_reproducible(tiny_world, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    first = listing_tokenizer(tiny_world.observed, "tiny-test", vocab_size=CONFIG.vocab_size)
    assert first.to_str() == tiny_tokenizer.to_str()
    (folder,) = tmp_path.glob("tokenizer-*")
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        again = listing_tokenizer(tiny_world.observed, "tiny-test", vocab_size=CONFIG.vocab_size)
    assert again.to_str() == tiny_tokenizer.to_str()


def test_doc2query_learns_and_stops_on_validation_loss(pretrained, tiny_world, tiny_tokenizer):
    model, history = pretrained
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.best_score == max(history.valid_score)  # negated validation loss
    listings = TokenizedTexts.of(tiny_tokenizer, listing_documents(tiny_world.observed.listings), CONFIG.max_len)
    valid = Doc2QueryData.of(tiny_tokenizer, purchase_pairs(tiny_world.observed, "valid"), listings, CONFIG.max_len)
    assert mean_loss(model, valid) == pytest.approx(-history.best_score, rel=1e-5)


def test_generated_queries_are_text(pretrained, tiny_world, tiny_tokenizer):
    model, _ = pretrained
    docs = listing_documents(tiny_world.observed.listings.iloc[:5])
    greedy = generate_queries(model, tiny_tokenizer, docs, max_len=6)
    sampled = generate_queries(model, tiny_tokenizer, docs, max_len=6, top_k=10, seed=1)
    assert len(greedy) == len(sampled) == 5 and all(isinstance(q, str) for q in greedy + sampled)
    assert any(sampled)
    assert sampled == generate_queries(model, tiny_tokenizer, docs, max_len=6, top_k=10, seed=1)


def test_vocab_mismatch_is_a_clear_error(tiny_world, tiny_tokenizer):
    with pytest.raises(ValueError, match="vocab_size"):
        fit_doc2query(tiny_world.observed, tiny_tokenizer, TransformerConfig(vocab_size=100), TRAIN, progress=False)


def test_cached_doc2query_round_trips(tiny_world, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    small = TrainConfig(epochs=1, batch_size=64)
    trained, history = doc2query_model(tiny_world.observed, "tiny-test", tiny_tokenizer, CONFIG, small, progress=False)
    loaded, loaded_history = doc2query_model(tiny_world.observed, "tiny-test", tiny_tokenizer, CONFIG, small,
                                             progress=False)
    assert loaded_history == history
    for (name, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    src = torch.tensor(np.array([[5, 6, 7]]))
    assert loaded.generate(src, src == 0, max_len=4) == trained.generate(src, src == 0, max_len=4)
