"""Save and load a generated marketplace without pickle, so every chapter can share one generation.

Generating the ``book`` world takes about half a minute, and every chapter starts from the same world;
:func:`retrieval_lib.marketplace.generate` with ``cache=True`` stores it once in the artifact cache
(:mod:`retrieval_lib.infra.cache`, keyed by the config and the generator's code) and loads it after.
Frames are stored column by column in ``.npz`` files (text as fixed-width unicode, tuples of tags
joined by a separator), latent arrays as they are; ``allow_pickle=False`` throughout, so a cache
file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval_lib.marketplace.config import MarketplaceConfig
from retrieval_lib.marketplace.data import LatentTruth, Marketplace, ObservedMarketplace

#: Frames of :class:`ObservedMarketplace`, and the latent dicts of :class:`LatentTruth`.
FRAMES: tuple[str, ...] = ("listings", "shops", "users", "sessions", "impressions", "archive")
LATENT_DICTS: tuple[str, ...] = ("listings", "users", "intents")
#: Joins the words of a tuple column (a listing's tags); never part of a word.
SEPARATOR = "\x1f"


def _save_frame(frame: pd.DataFrame, path: Path) -> dict[str, str]:
    arrays, kinds = {}, {}
    for col in frame.columns:
        values = frame[col]
        if values.dtype == object:  # tuples of words
            if not values.map(lambda v: isinstance(v, tuple)).all():
                raise ValueError(f"column {col!r}: only tuples of words can be stored in an object column")
            arrays[col] = np.asarray([SEPARATOR.join(v) for v in values], dtype=str)
            kinds[col] = "tuple"
        elif isinstance(values.dtype, pd.StringDtype) or values.dtype.kind in "OSU":
            arrays[col] = np.asarray(values.astype(str).to_numpy(dtype=object), dtype=str)
            kinds[col] = "str"
        else:
            arrays[col] = values.to_numpy()
            kinds[col] = str(values.dtype)
    np.savez(path, **arrays)
    return kinds


def _load_frame(path: Path, kinds: dict[str, str]) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as data:
        columns = {}
        for col, kind in kinds.items():
            values = data[col]
            if kind == "tuple":
                columns[col] = pd.Series([tuple(v.split(SEPARATOR)) if v else () for v in values.tolist()],
                                         dtype=object)
            elif kind == "str":
                columns[col] = pd.Series(values.tolist(), dtype="str")
            else:
                columns[col] = pd.Series(values, dtype=kind)
    return pd.DataFrame(columns)


def save_world(world: Marketplace, folder: Path) -> None:
    """Write ``world``'s observed frames and latent truth into ``folder`` (its config is the cache key)."""
    observed, latent = world.observed, world.latent
    meta = {"frames": {name: _save_frame(getattr(observed, name), folder / f"observed_{name}.npz")
                       for name in FRAMES},
            "train_end": observed.train_end, "valid_end": observed.valid_end,
            "n_aesthetics": latent.n_aesthetics}
    for name in LATENT_DICTS:
        np.savez(folder / f"latent_{name}.npz", **getattr(latent, name))
    np.save(folder / "latent_labels.npy", latent.labels)
    (folder / "world.json").write_text(json.dumps(meta))


def load_world(config: MarketplaceConfig, folder: Path) -> Marketplace:
    """Read a world written by :func:`save_world` for ``config``."""
    meta = json.loads((folder / "world.json").read_text())
    frames = {name: _load_frame(folder / f"observed_{name}.npz", meta["frames"][name]) for name in FRAMES}
    observed = ObservedMarketplace(**frames, train_end=meta["train_end"], valid_end=meta["valid_end"])
    dicts = {}
    for name in LATENT_DICTS:
        with np.load(folder / f"latent_{name}.npz", allow_pickle=False) as data:
            dicts[name] = {key: data[key] for key in data.files}
    latent = LatentTruth(**dicts, labels=np.load(folder / "latent_labels.npy", allow_pickle=False),
                         weights=config.weights, n_aesthetics=meta["n_aesthetics"])
    return Marketplace(config=config, observed=observed, latent=latent)
