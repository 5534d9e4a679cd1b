import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.baselines.popularity import PopularityRetriever
from retrieval_lib.encoders.transformer import Doc2Query, TransformerConfig
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.transformer_tower import (
    TransformerRetriever,
    TransformerTwoTower,
    fit_transformer_two_tower,
    transformer_two_tower,
    weights_digest,
)
from retrieval_lib.text.wordpiece import TokenizedTexts, encode_batch
from retrieval_lib.training.trainer import TrainConfig

CONFIG = TransformerConfig(vocab_size=1000, dim=32, heads=4, layers=1, ff_dim=64, max_len=40)
TRAIN = TrainConfig(epochs=4, batch_size=128, lr=3e-3, patience=2)


@pytest.fixture(scope="module")
def trained(tiny_world, tiny_tokenizer):
    return fit_transformer_two_tower(tiny_world.observed, tiny_tokenizer, CONFIG, TRAIN, progress=False)


def test_towers_give_unit_vectors_and_the_query_tower_ignores_padding(tiny_tokenizer):
    torch.manual_seed(0)
    model = TransformerTwoTower(CONFIG, out_dim=16).eval()
    ids, pad = encode_batch(tiny_tokenizer, ["silver necklace", "a much longer listing title for a mug", ""], 40)
    q, v = model.encode_queries(ids, pad), model.encode_listings(ids, pad)
    assert q.shape == v.shape == (3, 16)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    alone, alone_pad = encode_batch(tiny_tokenizer, ["silver necklace"], 40)
    torch.testing.assert_close(model.encode_queries(alone, alone_pad)[0], q[0])
    torch.testing.assert_close(model.encode_listings(alone, alone_pad)[0], v[0], atol=1e-5, rtol=1e-5)


def test_query_tower_is_a_mean_of_token_embeddings(tiny_tokenizer):
    model = TransformerTwoTower(CONFIG, out_dim=CONFIG.dim)
    with torch.no_grad():
        model.query_proj.weight.copy_(torch.eye(CONFIG.dim))
        model.query_proj.bias.zero_()
    ids, pad = encode_batch(tiny_tokenizer, ["silver necklace"], 40)
    expected = model.encoder.tokens.weight[ids[0]].mean(0)
    torch.testing.assert_close(model.encode_queries(ids, pad)[0], expected / expected.norm())


def test_init_from_copies_the_pretrained_encoder():
    torch.manual_seed(1)
    pretrained = Doc2Query(CONFIG)
    model = TransformerTwoTower(CONFIG).init_from(pretrained)
    for (name, a), (_, b) in zip(pretrained.encoder.state_dict().items(), model.encoder.state_dict().items(),
                                 strict=True):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="config"):
        TransformerTwoTower(CONFIG).init_from(Doc2Query(TransformerConfig(vocab_size=1000, dim=16, heads=2)))
    with pytest.raises(ValueError, match="out_dim"):
        TransformerTwoTower(CONFIG, out_dim=0)


def test_weights_digest_tracks_the_weights():
    torch.manual_seed(0)
    a = Doc2Query(CONFIG)
    torch.manual_seed(0)
    b = Doc2Query(CONFIG)
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.encoder.tokens.weight[5, 0] += 1.0
    assert weights_digest(a) != weights_digest(b)


def test_trained_retriever_beats_popularity(tiny_world, tiny_tokenizer, trained):
    model, history = trained
    assert history.best_score > 0
    es = EvaluationSet.build(tiny_world, "test")
    ours = evaluate(TransformerRetriever(model, tiny_tokenizer, tiny_world.observed.listings), es)
    popular = evaluate(PopularityRetriever().fit(tiny_world.observed.logs("train")), es)
    assert ours.value("recall@100", "all") > popular.value("recall@100", "all")


def test_retriever_handles_empty_and_unknown_queries(tiny_world, tiny_tokenizer, trained):
    retriever = TransformerRetriever(trained[0], tiny_tokenizer, tiny_world.observed.listings)
    ids = retriever.retrieve(pd.DataFrame({"query": ["", "qqqq zzzz", "necklace"]}), 10)
    assert ids.shape == (3, 10) and (ids >= 0).all()
    assert np.isfinite(retriever.search([""], 5)[1]).all()
    with pytest.raises(ValueError, match="tokenized"):
        TransformerRetriever(trained[0], tiny_tokenizer, tiny_world.observed.listings,
                             TokenizedTexts.of(tiny_tokenizer, ["x"], 40))


def test_cached_model_round_trips_and_keys_the_initialisation(tiny_world, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    small = TrainConfig(epochs=1, batch_size=128)
    torch.manual_seed(5)  # not the training seed, which would give the scratch model the same encoder
    init = Doc2Query(CONFIG)
    scratch, _ = transformer_two_tower(tiny_world.observed, "t", tiny_tokenizer, CONFIG, small, progress=False)
    warm, _ = transformer_two_tower(tiny_world.observed, "t", tiny_tokenizer, CONFIG, small, init, progress=False)
    assert len(list(tmp_path.glob("transformer-*"))) == 2
    again, _ = transformer_two_tower(tiny_world.observed, "t", tiny_tokenizer, CONFIG, small, init, progress=False)
    assert weights_digest(again) == weights_digest(warm) != weights_digest(scratch)


def test_same_seed_same_model(tiny_world, tiny_tokenizer, trained):
    again, _ = fit_transformer_two_tower(tiny_world.observed, tiny_tokenizer, CONFIG, TRAIN, progress=False)
    assert weights_digest(again) == weights_digest(trained[0])
