"""Configuration of the synthetic marketplace: one validated dataclass and named size presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.infra.validation import probabilities as check_probabilities
from retrieval_lib.marketplace.vocabulary import AESTHETICS


@dataclass(frozen=True)
class ChoiceWeights:
    """Weights of the buyers' utility model (latent truth; see ``behaviour.utility``).

    Attributes
    ----------
    type_mismatch : float
        Penalty for a listing of another product type than the one the buyer wants.
    facet : float
        Reward per matched facet of the intent (style, colour, material, recipient, occasion).
    expressed : float
        Extra reward for a matched facet the buyer typed into the query.
    aesthetic : float
        Weight of the buyer's latent taste for the listing's aesthetic (which listings rarely name).
    quality : float
        Weight of the listing's latent quality.
    distance : float
        Penalty per 1,000 miles between buyer and shop.
    international : float
        Extra penalty when buyer and shop are in different countries.
    price : float
        Penalty per unit of absolute log-price distance from what the buyer likes to pay.
    """

    type_mismatch: float = 8.0
    facet: float = 1.0
    expressed: float = 1.0
    aesthetic: float = 0.9
    quality: float = 0.6
    distance: float = 0.35
    international: float = 1.0
    price: float = 0.8


@dataclass(frozen=True)
class MarketplaceConfig:
    """All knobs of the generator. Same config (including ``seed``) gives identical data.

    Sizes, time windows, vocabulary-gap rates, the logging policy and the buyers' funnel
    thresholds are all here; the invariants are checked on construction and a violation raises
    a ``ValueError`` that names the field.
    """

    name: str = "custom"
    seed: int = 0
    # sizes
    n_listings: int = 20_000
    n_shops: int = 800
    n_users: int = 5_000
    n_sessions: int = 100_000
    n_days: int = 90
    n_aesthetics: int = 24
    # time windows (train, then validation, then test)
    train_fraction: float = 0.7
    valid_fraction: float = 0.15
    new_listing_fraction: float = 0.1
    new_user_fraction: float = 0.2
    # the archive: an older window of engagement logs before day 0 (the graph and doc2query read it)
    archive_days: int = 180
    n_archive_sessions: int = 200_000
    # queries: probabilities of naming 0, 1, 2, 3 facets besides the product
    specificity: tuple[float, ...] = (0.42, 0.28, 0.2, 0.1)
    buyer_vocab_rate: float = 0.8
    buyer_type_rate: float = 0.7
    misspell_rate: float = 0.12
    # listings: how sellers write
    seller_vocab_rate: float = 0.75
    listing_buyer_vocab_rate: float = 0.06
    vague_listing_share: float = 0.12
    # logging policy (production-like lexical search with exploration)
    page_size: int = 16
    # evaluation: how many held-out sessions get a whole-catalogue label (a random sample; the rest keep -1)
    max_labelled_sessions: int = 50_000
    candidate_depth: int = 100
    explore_rate: float = 0.25
    classifier_accuracy: float = 0.7
    # buyer behaviour
    position_bias: float = 0.6
    click_threshold: float = 1.8
    cart_threshold: float = 3.0
    purchase_threshold: float = 3.6
    weights: ChoiceWeights = field(default_factory=ChoiceWeights)

    def __post_init__(self) -> None:
        positive = ["n_listings", "n_shops", "n_users", "n_sessions", "n_days", "n_aesthetics",
                    "page_size", "candidate_depth", "max_labelled_sessions", "archive_days",
                    "n_archive_sessions"]
        positive_ints(self, positive)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"MarketplaceConfig.seed must be a non-negative integer, got {self.seed!r}")
        probabilities = ["train_fraction", "valid_fraction", "new_listing_fraction", "new_user_fraction",
                         "buyer_vocab_rate", "buyer_type_rate", "misspell_rate", "seller_vocab_rate",
                         "listing_buyer_vocab_rate", "vague_listing_share", "explore_rate",
                         "classifier_accuracy", "position_bias"]
        check_probabilities(self, probabilities)
        for name in ["train_fraction", "valid_fraction"]:
            if getattr(self, name) <= 0.0:
                raise ValueError(f"MarketplaceConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.train_fraction + self.valid_fraction >= 1.0:
            raise ValueError("MarketplaceConfig.train_fraction + valid_fraction must be < 1 "
                             "(the rest is the test window)")
        if self.seller_vocab_rate + self.listing_buyer_vocab_rate > 1.0:
            raise ValueError("MarketplaceConfig.seller_vocab_rate + listing_buyer_vocab_rate must be <= 1")
        spec = self.specificity
        if (len(spec) != 4 or any((not isinstance(p, int | float)) or p < 0 for p in spec)
                or abs(sum(spec) - 1.0) > 1e-9):
            raise ValueError(f"MarketplaceConfig.specificity must be 4 non-negative probabilities "
                             f"summing to 1, got {spec!r}")
        if self.n_aesthetics > len(AESTHETICS):
            raise ValueError(f"MarketplaceConfig.n_aesthetics must be at most {len(AESTHETICS)} (named aesthetics)")
        if self.n_shops > self.n_listings:
            raise ValueError("MarketplaceConfig.n_shops must not exceed n_listings")
        if self.page_size > self.candidate_depth:
            raise ValueError("MarketplaceConfig.page_size must not exceed candidate_depth")
        if not self.click_threshold <= self.cart_threshold <= self.purchase_threshold:
            raise ValueError("MarketplaceConfig thresholds must satisfy "
                             "click_threshold <= cart_threshold <= purchase_threshold")
        for f in dataclasses.fields(self.weights):
            value = getattr(self.weights, f.name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"MarketplaceConfig.weights.{f.name} must be a non-negative number, "
                                 f"got {value!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MarketplaceConfig:
        """Return a named preset (``tiny``, ``book`` or ``large``), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown marketplace preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-able values."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of the whole config (used as a cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PRESETS: dict[str, MarketplaceConfig] = {
    "tiny": MarketplaceConfig(name="tiny", n_listings=2_000, n_shops=120, n_users=600,
                              n_sessions=8_000, n_days=60, archive_days=120, n_archive_sessions=16_000),
    "book": MarketplaceConfig(name="book"),
    "large": MarketplaceConfig(name="large", n_listings=1_000_000, n_shops=25_000, n_users=200_000,
                               n_sessions=700_000, n_days=120, max_labelled_sessions=5_000,
                               archive_days=120, n_archive_sessions=300_000),
}

#: Environment variable that picks the preset the chapters run on (``book`` unless set).
PRESET_ENV = "RETRIEVAL_LIB_PRESET"


def default_preset() -> str:
    """The preset the chapters use: ``$RETRIEVAL_LIB_PRESET`` or ``'book'`` (tests run them on ``tiny``)."""
    import os

    name = os.environ.get(PRESET_ENV, "book")
    if name not in PRESETS:
        raise ValueError(f"{PRESET_ENV}={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    return name
