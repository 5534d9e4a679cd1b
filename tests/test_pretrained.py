"""The off-the-shelf sentence encoder: offline loading, unit vectors, the cached catalogue and its retriever."""

import os
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch

from retrieval_lib.encoders import pretrained
from retrieval_lib.encoders.pretrained import (
    OFFLINE,
    PretrainedBlockFeatures,
    PretrainedRetriever,
    encode_texts,
    model_mb,
    model_path,
    pretrained_listing_vectors,
    pretrained_query_vectors,
    with_pretrained_block,
)
from retrieval_lib.evaluation.offline import EvaluationSet
from retrieval_lib.infra.cache import CACHE_ENV, cache_dir
from retrieval_lib.models.unified import UnifiedConfig, UnifiedModel
from retrieval_lib.text.words import listing_documents

DIM = 384
TEXTS = ["silver necklace", "blue ceramic mug", "hand knitted wool sweater", "", "vintage leather backpack"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cosine(a: str, b: str) -> float:
    u, v = encode_texts([a, b], progress=False)
    return float(u @ v)


@pytest.fixture(scope="module")
def retriever(tiny_world) -> PretrainedRetriever:
    return PretrainedRetriever.fit(tiny_world.observed, tiny_world.config.fingerprint(), progress=False)


def test_encode_texts_gives_unit_float32_rows_of_384():
    vectors = encode_texts(TEXTS, progress=False)
    assert vectors.shape == (len(TEXTS), DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode_texts_of_nothing_is_an_empty_384_wide_array():
    vectors = encode_texts([], progress=False)
    assert vectors.shape == (0, DIM) and vectors.dtype == np.float32


def test_encode_texts_is_deterministic_and_batch_size_does_not_change_vectors():
    once = encode_texts(TEXTS, progress=False)
    np.testing.assert_array_equal(encode_texts(TEXTS, progress=False), once)
    np.testing.assert_allclose(encode_texts(TEXTS, batch_size=2, progress=False), once, atol=1e-5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            encode_texts(TEXTS, batch_size=bad, progress=False)


def test_encode_texts_keeps_input_order():
    a, b = "silver necklace", "blue ceramic mug"
    forward = encode_texts([a, b], progress=False)
    backward = encode_texts([b, a], progress=False)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    assert not np.allclose(forward[0], forward[1])


@pytest.mark.parametrize(("word", "synonym", "unrelated"), [
    ("necklace", "pendant", "coffee mug"),    # about 0.73 against 0.20
    ("navy blue", "cobalt", "wool socks"),    # about 0.38 against 0.30: a colour name is a weaker pull
    ("sofa", "couch", "candle"),              # about 0.86 against 0.25
    ("mug", "coffee cup", "notebook"),        # about 0.71 against 0.30
])
def test_the_encoder_knows_real_synonyms(word, synonym, unrelated):
    assert _cosine(word, synonym) > _cosine(word, unrelated)


def test_the_weights_ship_in_the_installed_wheel():
    folder = model_path()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert 80 < model_mb() < 100


def test_import_prints_nothing_and_loads_no_hugging_face_library():
    code = ("import sys, retrieval_lib.encoders.pretrained\n"
            "assert not {'sentence_transformers', 'transformers'} & set(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_encoding_works_without_network_and_prints_no_progress(tmp_path):
    child = textwrap.dedent("""
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network disabled in this test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        import os

        from retrieval_lib.encoders.pretrained import encode_texts

        print("shape", encode_texts(["silver necklace"], progress=False).shape)
        print("offline", os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    """)
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *OFFLINE)}
    env.update(HF_HOME=str(home), XDG_CACHE_HOME=str(home))
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shape (1, 384)" in proc.stdout
    assert "offline 1 1" in proc.stdout  # the module set the offline switches itself
    output = proc.stdout + proc.stderr
    for noise in ("Loading weights", "Batches", "it/s", "%|"):
        assert noise not in output, output
    assert list(home.iterdir()) == []  # nothing downloaded or cached under the empty home


def test_the_retriever_encodes_the_whole_catalogue_as_unit_vectors(tiny_world, retriever):
    n = len(tiny_world.observed.listings)
    assert tuple(retriever.listing_vectors.shape) == (n, DIM)
    assert retriever.listing_vectors.dtype == torch.float32
    np.testing.assert_allclose(retriever.listing_vectors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_array_equal(retriever.listing_ids, tiny_world.observed.listings["listing_id"].to_numpy())


def test_the_retriever_searches_and_retrieves_listing_ids(tiny_world, retriever):
    ids = set(tiny_world.observed.listings["listing_id"])
    found = retriever.search(["necklace"], 5)
    assert found.ids.shape == (1, 5) and set(found.ids[0]) <= ids
    assert (np.diff(found.scores[0]) <= 0).all()  # best first
    sessions = EvaluationSet.build(tiny_world, "test").sessions.iloc[:7]
    ranked = retriever.retrieve(sessions, 10)
    assert ranked.shape == (len(sessions), 10) and set(ranked.ravel()) <= ids


def test_a_listings_own_text_finds_that_listing_first(tiny_world, retriever):
    listings = tiny_world.observed.listings
    rows = np.random.default_rng(0).choice(len(listings), 20, replace=False)
    docs = listing_documents(listings.iloc[rows])
    top = retriever.search(docs, 1).ids[:, 0]
    assert (top == listings["listing_id"].to_numpy()[rows]).sum() >= 15


def test_the_retriever_needs_one_vector_per_listing(tiny_world):
    listings = tiny_world.observed.listings.iloc[:10]
    with pytest.raises(ValueError, match="10 listings but 9 vectors"):
        PretrainedRetriever(listings, np.zeros((9, DIM), dtype=np.float32))


def test_listing_vectors_are_cached_and_a_corrupt_cache_is_recomputed(tiny_world, monkeypatch):
    # a 40-listing stand-in keeps the encodes short and gets a cache entry of its own
    observed = types.SimpleNamespace(listings=tiny_world.observed.listings.iloc[:40].reset_index(drop=True))
    before = {p.name for p in cache_dir().glob("pretrained-*")}
    vectors, seconds = pretrained_listing_vectors(observed, "tiny-test-40", progress=False)
    assert vectors.shape == (40, DIM) and vectors.dtype == np.float32 and seconds > 0
    np.testing.assert_allclose(vectors, encode_texts(listing_documents(observed.listings), progress=False),
                               atol=1e-5)
    (folder,) = [p for p in cache_dir().glob("pretrained-*") if p.name not in before]
    assert str(cache_dir()) == os.environ[CACHE_ENV]  # the isolated test cache

    with monkeypatch.context() as mp:  # a second call loads: encoding would fail
        mp.setattr(pretrained, "encode_texts", lambda *a, **k: pytest.fail("encoded again instead of loading"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again, again_seconds = pretrained_listing_vectors(observed, "tiny-test-40", progress=False)
    np.testing.assert_array_equal(again, vectors)
    assert again_seconds == seconds

    (folder / "vectors.npy").write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="unreadable"):
        fresh, _ = pretrained_listing_vectors(observed, "tiny-test-40", progress=False)
    np.testing.assert_array_equal(fresh, vectors)
    np.testing.assert_array_equal(np.load(folder / "vectors.npy"), vectors)  # the cache was rewritten


def _queries(texts: list[str], seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.random.default_rng(seed).standard_normal((len(texts), DIM)).astype(np.float32)
    return np.array(texts, dtype=object), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_with_pretrained_block_swaps_only_the_transformer_block(tiny_unified_features):
    features = tiny_unified_features
    n = features.listing_blocks["transformer"].shape[0]
    original_block = features.listing_blocks["transformer"].clone()
    original_digest = features.digest()
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    new = with_pretrained_block(features, vectors, _queries(["silver necklace", "mug"]))
    assert isinstance(new, PretrainedBlockFeatures)
    assert torch.equal(new.listing_blocks["transformer"], torch.from_numpy(vectors))
    assert new.listing_blocks["transformer"].dtype == torch.float32
    assert new.dims["transformer"] == DIM
    assert set(new.listing_blocks) == set(features.listing_blocks)
    for name, block in features.listing_blocks.items():
        if name != "transformer":
            assert new.listing_blocks[name] is block
            assert new.dims[name] == features.dims[name]
    for field in ("observed", "tokenizer", "encoder", "graph", "listing_bags", "user_location", "history",
                  "history_vectors"):
        assert getattr(new, field) is getattr(features, field)
    assert new.digest() != original_digest
    other_queries = with_pretrained_block(features, vectors, _queries(["silver necklace", "mug"], seed=3))
    assert other_queries.digest() != new.digest()  # the query side is part of the key
    # the original features are untouched
    assert torch.equal(features.listing_blocks["transformer"], original_block)
    assert features.dims["transformer"] != DIM and features.digest() == original_digest


def test_the_query_side_reads_the_off_the_shelf_vectors_and_encodes_unseen_texts(tiny_unified_features):
    features = tiny_unified_features
    n = features.listing_blocks["transformer"].shape[0]
    texts, vectors = _queries(["silver necklace", "blue ceramic mug"])
    new = with_pretrained_block(features, np.zeros((n, DIM), np.float32), (texts, vectors))
    asked = ["blue ceramic mug", "hand knitted wool sweater", "silver necklace"]
    blocks = new.query_blocks(asked)
    np.testing.assert_array_equal(blocks["transformer"][0].numpy(), vectors[1])
    np.testing.assert_array_equal(blocks["transformer"][2].numpy(), vectors[0])
    np.testing.assert_allclose(blocks["transformer"][1].numpy(), encode_texts([asked[1]], progress=False)[0],
                               atol=1e-6)
    # the graph block is the base features' own
    assert torch.equal(blocks["graph"], features.query_blocks(asked)["graph"])


def test_with_pretrained_block_needs_one_row_per_listing_and_per_query(tiny_unified_features):
    n = tiny_unified_features.listing_blocks["transformer"].shape[0]
    queries = _queries(["mug"])
    for bad in (np.zeros((n - 1, DIM), np.float32), np.zeros((n + 1, DIM), np.float32), np.zeros(n, np.float32)):
        with pytest.raises(ValueError, match="one vector per listing"):
            with_pretrained_block(tiny_unified_features, bad, queries)
    with pytest.raises(ValueError, match="per query text"):
        with_pretrained_block(tiny_unified_features, np.zeros((n, DIM), np.float32),
                              (np.array(["mug", "cup"], dtype=object), queries[1]))


def test_a_unified_model_reads_the_pretrained_block_on_both_sides(tiny_unified_features):
    n = tiny_unified_features.listing_blocks["transformer"].shape[0]
    vectors = np.random.default_rng(1).standard_normal((n, DIM)).astype(np.float32)
    new = with_pretrained_block(tiny_unified_features, vectors, _queries(["silver necklace"]))
    config = UnifiedConfig()
    model = UnifiedModel(config, new.dims, seed=0).eval()
    rows = np.array([0, 3, 5, 11])
    texts = ["silver necklace", "blue ceramic mug"]
    users = np.array([-1, 0])
    with torch.no_grad():
        out = model.encode_listings(*new.listings(rows))
        bags, blocks, history = new.queries(texts, users, new.current_rows(users), config)
        q = model.encode_queries(bags, blocks, history)
    assert tuple(out.shape) == (len(rows), config.out_dim) and tuple(q.shape) == (len(texts), config.out_dim)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(q.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_query_vectors_cover_every_logged_query_and_are_cached(tiny_world, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    observed, fingerprint = tiny_world.observed, tiny_world.config.fingerprint()
    texts, vectors = pretrained_query_vectors(observed, fingerprint, progress=False)
    assert list(texts) == sorted(set(observed.sessions["query"].astype(str)))
    assert vectors.shape == (len(texts), DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[:3], encode_texts(list(texts[:3]), progress=False), atol=1e-6)
    again = pretrained_query_vectors(observed, fingerprint, progress=False)[1]
    np.testing.assert_array_equal(again, vectors)
