"""Draw the marketplace's entities: shops, listings (with their text) and users.

Each function returns the *latent* arrays (what the generator knows) and builds the *observable*
table from them (what the marketplace shows and logs). Nothing here looks at sessions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import geo
from retrieval_lib.marketplace import vocabulary as V
from retrieval_lib.marketplace.config import MarketplaceConfig
from retrieval_lib.marketplace.vocab_index import VocabIndex, draw_form_kinds, render

#: How often a (descriptive) listing's title mentions each facet it has. Sellers name the aesthetic
#: ("coastal", "y2k") in a title less often than in tags: titles are short and lead with the product.
TITLE_MENTION = {"aesthetic": 0.12, "style": 0.4, "colour": 0.65, "material": 0.65, "recipient": 0.6,
                 "occasion": 0.6}
#: How often a facet also appears as a tag. Style words are among the most used of Etsy's 13 tag
#: slots, so the aesthetic is tagged far more often than titled; most listings still do not name it.
TAG_MENTION = {"aesthetic": 0.4, "style": 0.45, "colour": 0.45, "material": 0.45, "recipient": 0.45,
               "occasion": 0.45}
#: Share of listings made for a recipient / an occasion.
RECIPIENT_SHARE, OCCASION_SHARE = 0.3, 0.25
#: Share of a listing's aesthetic drawn from the aesthetics aligned with its style (the rest is uniform).
AESTHETIC_STYLE_ALIGNMENT = 0.5


def sample_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """Draw one category per row of a row-stochastic matrix (vectorised inverse-CDF sampling)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def make_shops(cfg: MarketplaceConfig, vi: VocabIndex, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Shops: location, size (Zipf-like), a focus category and style, a latent quality and a name."""
    n = cfg.n_shops
    lat, lon, country = geo.sample_locations(rng, n)
    first = rng.integers(len(V.SHOP_NAME_FIRST), size=(n, 2))
    second = rng.integers(len(V.SHOP_NAME_SECOND), size=n)
    names = np.array([f"{V.SHOP_NAME_FIRST[a]} {V.SHOP_NAME_FIRST[b]} {V.SHOP_NAME_SECOND[c]}"
                      for (a, b), c in zip(first.tolist(), second.tolist(), strict=True)])
    return {
        "name": names,
        "lat": lat, "lon": lon, "country": country,
        "size": rng.pareto(1.2, n) + 1.0,
        "category": rng.choice(len(vi.category_names), size=n, p=vi.category_weights),
        "style": rng.integers(len(vi.style_terms), size=n),
        "quality": rng.normal(0.0, 0.7, n),
    }


def make_listings(cfg: MarketplaceConfig, vi: VocabIndex, shops: dict[str, np.ndarray],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Latent attributes of every listing (type, facets, aesthetic, quality, price, creation day)."""
    n = cfg.n_listings
    shop = rng.choice(cfg.n_shops, size=n, p=shops["size"] / shops["size"].sum())
    # Every shop gets at least one listing, so no shop is an empty row.
    shop[rng.permutation(n)[:cfg.n_shops]] = np.arange(cfg.n_shops)
    category = np.where(rng.random(n) < 0.85, shops["category"][shop],
                        rng.choice(len(vi.category_names), size=n, p=vi.category_weights))
    type_ = np.empty(n, dtype=np.int64)
    for ci, types in enumerate(vi.types_of_category):
        idx = np.flatnonzero(category == ci)
        type_[idx] = rng.choice(types, size=idx.size)
    n_styles = len(vi.style_terms)
    style = np.where(rng.random(n) < 0.5, shops["style"][shop], rng.integers(n_styles, size=n))
    per_style = max(1, cfg.n_aesthetics // n_styles)
    aligned = (style * per_style + rng.integers(per_style, size=n)) % cfg.n_aesthetics
    aesthetic = np.where(rng.random(n) < AESTHETIC_STYLE_ALIGNMENT, aligned,
                         rng.integers(cfg.n_aesthetics, size=n))
    quality = shops["quality"][shop] + rng.normal(0.0, 0.7, n)
    base_log_price = np.log(rng.lognormal(np.log(28.0), 0.45, vi.n_types))
    log_price = base_log_price[type_] + rng.normal(0.0, 0.45, n) + 0.1 * quality
    n_new = int(round(cfg.new_listing_fraction * n))
    created = -rng.uniform(1.0, 720.0, n)
    new = rng.permutation(n)[:n_new]
    created[new] = rng.uniform(0.0, cfg.n_days, n_new)
    return {
        "shop": shop, "category": category, "type": type_, "style": style,
        "vague": rng.random(n) < cfg.vague_listing_share,
        "colour": rng.integers(len(vi.colour_terms), size=n),
        "material": rng.integers(vi.n_materials, size=n),
        "recipient": np.where(rng.random(n) < RECIPIENT_SHARE, rng.integers(len(vi.recipient_terms), size=n), -1),
        "occasion": np.where(rng.random(n) < OCCASION_SHARE, rng.integers(len(vi.occasion_terms), size=n), -1),
        "aesthetic": aesthetic, "quality": quality, "log_price": log_price,
        "base_log_price": base_log_price, "created_day": created,
    }


def listing_text(cfg: MarketplaceConfig, vi: VocabIndex, lat: dict[str, np.ndarray], shop_names: np.ndarray,
                 rng: np.random.Generator) -> tuple[list[str], list[tuple[str, ...]]]:
    """Write each listing's title and tags the way sellers do: mostly catalogue words, few buyer words.

    A title reads ``[filler] [aesthetic] [style] [colour] [material] <product> [for <recipient>]
    [occasion]``; each facet is mentioned only with some probability, so the text shows the latent
    attributes only partly. *Vague* listings (``lat["vague"]``) say nothing about the product: a stock
    phrase and the shop's name ("perfect gift wren moss studio"); only their taxonomy path and the
    buyers who engage with them tell what they are.
    """
    n = lat["type"].size
    p_seller, p_buyer = cfg.seller_vocab_rate, cfg.listing_buyer_vocab_rate
    types = [vi.type_terms[t] for t in lat["type"].tolist()]
    slots: dict[str, list[str]] = {}
    tags: list[list[str]] = [[w] for w in render(types, draw_form_kinds(rng, n, 1.0 - p_buyer, p_buyer),
                                                 rng.random(n))]
    def seller_words(facet: str, idx: np.ndarray) -> list[str]:
        """How sellers word ``facet`` for the listings ``idx`` (mostly seller forms)."""
        return render(vi.facet_terms(facet, lat[facet][idx], lat["category"][idx]),
                      draw_form_kinds(rng, idx.size, p_seller, p_buyer), rng.random(idx.size))

    for facet in V.FACETS:
        has = lat[facet] >= 0 if facet in ("recipient", "occasion") else np.ones(n, bool)
        words = [""] * n
        in_title = np.flatnonzero(has & (rng.random(n) < TITLE_MENTION[facet]))
        for i, w in zip(in_title.tolist(), seller_words(facet, in_title), strict=True):
            words[i] = f"for {w}" if facet == "recipient" else w
        slots[facet] = words
        in_tags = np.flatnonzero(has & (rng.random(n) < TAG_MENTION[facet]))
        for i, w in zip(in_tags.tolist(), seller_words(facet, in_tags), strict=True):
            tags[i].append(w)
    slots["product"] = render(types, draw_form_kinds(rng, n, 0.5, p_buyer), rng.random(n))
    n_filler = rng.integers(0, 3, n).tolist()
    order = ("aesthetic", "style", "colour", "material", "product", "recipient", "occasion")
    titles = []
    for i in range(n):
        filler = [V.SELLER_FILLER[j] for j in rng.choice(len(V.SELLER_FILLER), size=n_filler[i], replace=False)]
        titles.append(" ".join(filler + [slots[s][i] for s in order if slots[s][i]]))
    vague = np.flatnonzero(lat["vague"])
    phrase = rng.integers(len(V.VAGUE_PHRASES), size=(vague.size, 2))
    for i, (a, b) in zip(vague.tolist(), phrase.tolist(), strict=True):
        shop = str(shop_names[lat["shop"][i]])
        titles[i] = f"{V.VAGUE_PHRASES[a]} {shop}"
        tags[i] = [V.VAGUE_PHRASES[a], V.VAGUE_PHRASES[b], shop]
    return titles, [tuple(dict.fromkeys(t)) for t in tags]


def observable_listings(cfg: MarketplaceConfig, vi: VocabIndex, lat: dict[str, np.ndarray],
                        shops: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """The public listing table: text, taxonomy, price, creation day and review signals."""
    titles, tags = listing_text(cfg, vi, lat, shops["name"], rng)
    n = len(titles)
    train_end = cfg.train_fraction * cfg.n_days
    age_years = np.clip((train_end - lat["created_day"]) / 365.0, 0.0, None)
    reviews = rng.poisson(np.exp(1.2 + 0.6 * lat["quality"]) * 6.0 * age_years)
    rating = np.clip(np.round(4.3 + 0.3 * lat["quality"] + rng.normal(0, 0.3, n), 1), 1.0, 5.0)
    rating = np.where(reviews > 0, rating, np.nan)
    return pd.DataFrame({
        "listing_id": np.arange(n),
        "shop_id": lat["shop"],
        "title": titles,
        "tags": tags,
        "taxonomy": [vi.taxonomy_path(t) for t in lat["type"].tolist()],
        "price": np.round(np.exp(lat["log_price"]), 2),
        "created_day": np.round(lat["created_day"], 3),
        "rating": rating,
        "review_count": reviews,
    })


def observable_shops(shops: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """The public shop table: name, location, country and a lifetime sales counter."""
    n = shops["lat"].size
    sales = rng.poisson(np.exp(2.0 + 0.8 * shops["quality"]) * shops["size"])
    return pd.DataFrame({
        "shop_id": np.arange(n),
        "name": shops["name"],
        "lat": np.round(shops["lat"], 4), "lon": np.round(shops["lon"], 4),
        "country": np.array(geo.COUNTRY_NAMES)[shops["country"]],
        "sales_count": sales,
    })


def make_users(cfg: MarketplaceConfig, vi: VocabIndex, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Buyers: a location, a sign-up day, an activity level and latent tastes (Dirichlet preferences)."""
    n = cfg.n_users
    lat, lon, country = geo.sample_locations(rng, n)
    signup = -rng.uniform(1.0, 720.0, n)
    n_new = int(round(cfg.new_user_fraction * n))
    new = rng.permutation(n)[:n_new]
    signup[new] = rng.uniform(0.0, cfg.n_days, n_new)
    return {
        "lat": lat, "lon": lon, "country": country, "signup_day": signup,
        "activity": rng.lognormal(0.0, 1.0, n),
        "category_pref": rng.dirichlet(np.full(len(vi.category_names), 0.35), n) * 0.9
        + 0.1 * vi.category_weights,
        "colour_pref": rng.dirichlet(np.full(len(vi.colour_terms), 0.4), n),
        "style_pref": rng.dirichlet(np.full(len(vi.style_terms), 0.35), n),
        "aesthetic_pref": rng.dirichlet(np.full(cfg.n_aesthetics, 0.2), n),
        "log_price_level": rng.normal(0.0, 0.35, n),
    }


def observable_users(users: dict[str, np.ndarray]) -> pd.DataFrame:
    """The public user table: location, country and sign-up day (tastes are never logged)."""
    n = users["lat"].size
    return pd.DataFrame({
        "user_id": np.arange(n),
        "lat": np.round(users["lat"], 4), "lon": np.round(users["lon"], 4),
        "country": np.array(geo.COUNTRY_NAMES)[users["country"]],
        "signup_day": np.round(users["signup_day"], 3),
    })

