import pytest

from retrieval_lib.marketplace import PRESETS, ChoiceWeights, MarketplaceConfig, default_preset, generate


def test_presets_grow_in_size():
    tiny, book, large = (PRESETS[n] for n in ("tiny", "book", "large"))
    assert tiny.n_listings < book.n_listings < large.n_listings == 1_000_000
    assert tiny.n_sessions < book.n_sessions < large.n_sessions


def test_preset_overrides_and_fingerprint():
    cfg = MarketplaceConfig.preset("tiny", seed=3)
    assert cfg.seed == 3 and cfg.n_listings == PRESETS["tiny"].n_listings
    assert cfg.fingerprint() != PRESETS["tiny"].fingerprint()
    assert cfg.fingerprint() == MarketplaceConfig.preset("tiny", seed=3).fingerprint()


@pytest.mark.parametrize("field, value", [
    ("n_listings", 0), ("n_listings", -5), ("n_listings", 1.5), ("n_users", True), ("n_sessions", 0),
    ("n_days", -1), ("page_size", 0), ("seed", -1), ("explore_rate", 1.5), ("misspell_rate", -0.1),
    ("buyer_vocab_rate", 2), ("classifier_accuracy", "high"), ("train_fraction", 0.0),
    ("valid_fraction", 0.0),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MarketplaceConfig.preset("tiny", **{field: value})


@pytest.mark.parametrize("overrides, match", [
    ({"train_fraction": 0.8, "valid_fraction": 0.2}, "train_fraction"),
    ({"specificity": (0.5, 0.5, 0.5, 0.5)}, "specificity"),
    ({"specificity": (1.0, 0.0)}, "specificity"),
    ({"page_size": 200}, "page_size"),
    ({"n_shops": 10_000}, "n_shops"),
    ({"click_threshold": 5.0}, "threshold"),
    ({"seller_vocab_rate": 0.99, "listing_buyer_vocab_rate": 0.2}, "seller_vocab_rate"),
    ({"weights": ChoiceWeights(distance=-1.0)}, "weights.distance"),
])
def test_inconsistent_configs_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        MarketplaceConfig.preset("tiny", **overrides)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="tiny"):
        MarketplaceConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown marketplace preset"):
        generate("huge")


def test_generate_rejects_other_types():
    with pytest.raises(TypeError):
        generate(42)


def test_default_preset_reads_the_environment(monkeypatch):
    monkeypatch.delenv("RETRIEVAL_LIB_PRESET", raising=False)
    assert default_preset() == "book"
    monkeypatch.setenv("RETRIEVAL_LIB_PRESET", "tiny")
    assert default_preset() == "tiny"
    monkeypatch.setenv("RETRIEVAL_LIB_PRESET", "nope")
    with pytest.raises(ValueError, match="RETRIEVAL_LIB_PRESET"):
        default_preset()
