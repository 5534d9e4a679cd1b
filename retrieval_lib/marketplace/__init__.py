"""A synthetic marketplace to train and evaluate retrieval on.

It has a semantic gap, broad head queries, engagement structure, quality, location, graded interactions
and time; observable data and latent truth are kept apart.

>>> from retrieval_lib.marketplace import generate
>>> world = generate("tiny", seed=0)
>>> world.observed.sessions.columns.tolist()
['session_id', 'user_id', 'query', 'day', 'split']
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from retrieval_lib.infra.cache import cached
from retrieval_lib.infra.progress import progress_bar
from retrieval_lib.marketplace import behaviour, policy, queries, world
from retrieval_lib.marketplace.config import PRESETS, ChoiceWeights, MarketplaceConfig, default_preset
from retrieval_lib.marketplace.data import SPLITS, LatentTruth, Marketplace, ObservedMarketplace
from retrieval_lib.marketplace.store import load_world, save_world
from retrieval_lib.marketplace.vocab_index import vocab_index

__all__ = ["PRESETS", "SPLITS", "ChoiceWeights", "LatentTruth", "Marketplace", "MarketplaceConfig",
           "ObservedMarketplace", "default_preset", "generate"]

_STREAMS = ("shops", "listings", "text", "users", "sessions", "intents", "queries", "pages", "funnel", "labels",
            "archive")


def generate(config: MarketplaceConfig | str = "book", seed: int | None = None,
             progress: bool = False, cache: bool = False) -> Marketplace:
    """Generate a marketplace from a config or a preset name (``tiny``, ``book``, ``large``).

    ``seed`` overrides the config's seed. The same config and seed always give identical data: every
    stage draws from its own child stream of one ``numpy.random.SeedSequence``. ``progress`` shows a
    progress bar over the stages (worth it for ``large``). ``cache=True`` goes through the artifact
    cache (keyed by the config and this package's code; see :mod:`retrieval_lib.marketplace.store`), so
    the chapters generate the world once and load it after.
    """
    cfg = MarketplaceConfig.preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, MarketplaceConfig):
        raise TypeError(f"config must be a MarketplaceConfig or a preset name, got {type(config).__name__}")
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if cache:
        return cached("world", {"config": cfg.to_dict()}, lambda: generate(cfg, progress=progress),
                      save_world, lambda folder: load_world(cfg, folder), code=__name__)
    rngs = dict(zip(_STREAMS, (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(
        len(_STREAMS))), strict=True))
    vi = vocab_index()
    bar = progress_bar(total=6, progress=progress, desc=f"marketplace '{cfg.name}'")

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    stage("catalogue")
    shops = world.make_shops(cfg, vi, rngs["shops"])
    lat_listings = world.make_listings(cfg, vi, shops, rngs["listings"])
    listings = world.observable_listings(cfg, vi, lat_listings, shops, rngs["text"])
    users = world.make_users(cfg, vi, rngs["users"])
    bar.update()

    stage("sessions and queries")
    sess = queries.make_sessions(cfg, users, rngs["sessions"])
    intents = queries.make_intents(cfg, vi, users, sess, rngs["intents"])
    expr = queries.choose_expression(cfg, intents, rngs["queries"])
    query_text = queries.render_queries(cfg, vi, intents, expr, rngs["queries"])
    train_end = cfg.train_fraction * cfg.n_days
    valid_end = (cfg.train_fraction + cfg.valid_fraction) * cfg.n_days
    split = np.where(sess["day"] < train_end, "train", np.where(sess["day"] < valid_end, "valid", "test"))
    lat_listings = {**lat_listings, "shop_lat": shops["lat"][lat_listings["shop"]],
                    "shop_lon": shops["lon"][lat_listings["shop"]],
                    "shop_country": shops["country"][lat_listings["shop"]],
                    "base_log_price": lat_listings["base_log_price"][lat_listings["type"]]}
    latent = LatentTruth(listings=lat_listings, users=users,
                         intents={**intents, **expr, "user": sess["user"], "day": sess["day"]},
                         labels=np.full(cfg.n_sessions, -1, dtype=np.int64), weights=cfg.weights,
                         n_aesthetics=cfg.n_aesthetics)
    bar.update()

    stage("evaluation labels")  # what each held-out buyer would buy from the whole catalogue
    held_out = np.flatnonzero(split != "train")
    if held_out.size > cfg.max_labelled_sessions:
        held_out = np.sort(rngs["labels"].choice(held_out, size=cfg.max_labelled_sessions, replace=False))
    labels = latent.labels.copy()
    labels[held_out] = behaviour.choose_from_catalogue(latent, held_out, rngs["labels"])
    latent = dataclasses.replace(latent, labels=labels)
    bar.update()

    stage("logging policy (BM25)")
    pages = policy.show_pages(cfg, latent, listings, query_text, rngs["pages"], progress=progress)
    bar.update()

    stage("buyer funnel")
    impressions = policy.simulate_funnel(cfg, latent, pages, rngs["funnel"])
    observed = ObservedMarketplace(
        listings=listings,
        shops=world.observable_shops(shops, rngs["shops"]),
        users=world.observable_users(users),
        sessions=pd.DataFrame({"session_id": np.arange(cfg.n_sessions), "user_id": sess["user"],
                               "query": query_text, "day": np.round(sess["day"], 4), "split": split}),
        impressions=impressions,
        train_end=train_end,
        valid_end=valid_end,
    )
    bar.update()

    stage("archive (older engagement logs)")
    observed = dataclasses.replace(observed, archive=archive_logs(cfg, latent, listings, rngs["archive"]))
    bar.update()
    bar.close()
    return Marketplace(config=cfg, observed=observed, latent=latent)


def archive_logs(cfg: MarketplaceConfig, latent: LatentTruth, listings: pd.DataFrame,
                 rng: np.random.Generator) -> pd.DataFrame:
    """The engaged impressions of an older window ``[-archive_days, 0)``, same policy and buyers.

    A marketplace keeps its engagement logs for years, while a two-tower model trains on a recent
    window; doc2query pre-training reads the archive's purchases and the engagement graph its clicks.
    Returns ``user_id, query, day, listing_id, click, cart, purchase`` per clicked impression, by day.
    """
    vi = vocab_index()
    sess = queries.make_sessions(cfg, latent.users, rng, window=(-float(cfg.archive_days), 0.0),
                                 n=cfg.n_archive_sessions)
    intents = queries.make_intents(cfg, vi, latent.users, sess, rng)
    expr = queries.choose_expression(cfg, intents, rng)
    text = queries.render_queries(cfg, vi, intents, expr, rng)
    archive = dataclasses.replace(latent, intents={**intents, **expr, "user": sess["user"], "day": sess["day"]},
                                  labels=np.full(sess["day"].size, -1, dtype=np.int64))
    pages = policy.show_pages(cfg, archive, listings, text, rng)
    engaged = policy.simulate_funnel(cfg, archive, pages, rng).query("click")
    rows = engaged["session_id"].to_numpy()
    return pd.DataFrame({"user_id": sess["user"][rows], "query": np.asarray(text, dtype=object)[rows],
                         "day": np.round(sess["day"][rows], 4), "listing_id": engaged["listing_id"].to_numpy(),
                         "click": True, "cart": engaged["cart"].to_numpy(),
                         "purchase": engaged["purchase"].to_numpy()}).reset_index(drop=True)
