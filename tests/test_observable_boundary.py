"""Models may use only what a real marketplace logs; the generator's latent truth is for evaluation."""

import ast
import dataclasses
from pathlib import Path

import numpy as np

from retrieval_lib.marketplace import ObservedMarketplace

LIB = Path(__file__).resolve().parents[1] / "retrieval_lib"

ALLOWED_COLUMNS = {
    "listings": {"listing_id", "shop_id", "title", "tags", "taxonomy", "price", "created_day", "rating",
                 "review_count"},
    "shops": {"shop_id", "lat", "lon", "country", "sales_count"},
    "users": {"user_id", "lat", "lon", "country", "signup_day"},
    "sessions": {"session_id", "user_id", "query", "day", "split"},
    "impressions": {"session_id", "listing_id", "position", "click", "cart", "purchase"},
}
#: Modules that may read latent truth: the generator itself and evaluation.
LATENT_READERS = {"marketplace", "evaluation.py"}


def test_observed_tables_hold_only_loggable_columns(tiny_world):
    fields = {f.name for f in dataclasses.fields(ObservedMarketplace)}
    assert fields == set(ALLOWED_COLUMNS) | {"train_end", "valid_end"}
    for name, allowed in ALLOWED_COLUMNS.items():
        assert set(getattr(tiny_world.observed, name).columns) == allowed, name


def test_observed_carries_no_generator_config_or_arrays(tiny_world):
    obs = tiny_world.observed
    for f in dataclasses.fields(obs):
        value = getattr(obs, f.name)
        assert not isinstance(value, np.ndarray | dict), f.name
        assert "weights" not in f.name and "config" not in f.name


def test_observable_signals_are_noisy_not_copies_of_latent_values(tiny_world):
    quality = tiny_world.latent.listings["quality"]
    rating = tiny_world.observed.listings["rating"].to_numpy()
    rated = ~np.isnan(rating)
    corr = np.corrcoef(quality[rated], rating[rated])[0, 1]
    assert 0.3 < corr < 0.95
    # the taxonomy is observable (sellers choose it), the aesthetic is not written anywhere
    text = " ".join(tiny_world.observed.listings["title"])
    assert "aesthetic" not in text


def _latent_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"latent"}:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "LatentTruth":
            found.append(f"{path.name}:{node.lineno} LatentTruth")
        elif isinstance(node, ast.ImportFrom) and node.module and "behaviour" in node.module:
            found.append(f"{path.name}:{node.lineno} import behaviour")
    return found


def test_only_generator_and_evaluation_read_latent_truth():
    offenders = []
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).parts
        if rel[0] in LATENT_READERS:
            continue
        offenders += _latent_uses(path)
    assert not offenders, f"modules outside {LATENT_READERS} read latent truth: {offenders}"


def test_the_scanner_would_catch_a_leak(tmp_path):
    leak = tmp_path / "model.py"
    leak.write_text("def features(world):\n    return world.latent.users['aesthetic_pref']\n")
    assert _latent_uses(leak)
