"""Models may use only what a real marketplace logs; the generator's latent truth is for evaluation."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from retrieval_lib.marketplace import ObservedMarketplace

LIB = Path(__file__).resolve().parents[1] / "retrieval_lib"

ALLOWED_COLUMNS = {
    "listings": {"listing_id", "shop_id", "title", "tags", "taxonomy", "price", "created_day", "rating",
                 "review_count"},
    "shops": {"shop_id", "name", "lat", "lon", "country", "sales_count"},
    "users": {"user_id", "lat", "lon", "country", "signup_day"},
    "sessions": {"session_id", "user_id", "query", "day", "split"},
    "impressions": {"session_id", "listing_id", "position", "click", "cart", "purchase"},
    "archive": {"user_id", "query", "day", "listing_id", "click", "cart", "purchase"},
}
#: What may read latent truth, relative to the package: the generator itself and the simulated A/B
#: test's buyers (whole subpackages), the evaluation modules that score against it, and the explorer,
#: which marks for the reader what a logged request's buyer would buy (shown, never fed to a model).
#: Nothing else, not even the rest of ``evaluation/``.
LATENT_PACKAGES = {("marketplace",), ("simulation",)}
LATENT_MODULES = {("evaluation", "offline.py"), ("evaluation", "probes.py"), ("evaluation", "oracle.py"),
                  ("explore.py",)}


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
    # the taxonomy is observable (sellers choose it); no listing says that it is vague
    text = " ".join(tiny_world.observed.listings["title"])
    assert "aesthetic" not in text and "vague" not in text
    # the aesthetic is named by some listings' text, never as a hidden id
    assert not any(str(a) == t for a, tags in zip(tiny_world.latent.listings["aesthetic"],
                                                  tiny_world.observed.listings["tags"], strict=True) for t in tags)


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
        elif isinstance(node, ast.Import | ast.ImportFrom) and any(
                "behaviour" in a.name or a.name == "LatentTruth" for a in node.names):
            found.append(f"{path.name}:{node.lineno} import {', '.join(a.name for a in node.names)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and any(isinstance(a, ast.Constant) and a.value == "latent" for a in node.args)):
            found.append(f"{path.name}:{node.lineno} getattr latent")
    return found


def _may_read_latent(rel: tuple[str, ...]) -> bool:
    return rel[:1] in LATENT_PACKAGES or rel in LATENT_MODULES


def _offenders(lib: Path) -> list[str]:
    offenders = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib).parts
        if not _may_read_latent(rel):
            offenders += [f"{'/'.join(rel[:-1])}/{use}" for use in _latent_uses(path)]
    return offenders


def test_only_generator_and_evaluation_read_latent_truth():
    # the allow-list names real files that really read latent truth (a stale entry would hide nothing)
    for parts in LATENT_MODULES:
        assert LIB.joinpath(*parts).is_file(), parts
        assert _latent_uses(LIB.joinpath(*parts)), f"{parts} no longer reads latent truth: drop it from the list"
    for parts in LATENT_PACKAGES:
        assert LIB.joinpath(*parts).is_dir(), parts
    assert len(list(LIB.rglob("*.py"))) > 20  # the scan really walks the package
    offenders = _offenders(LIB)
    assert not offenders, f"modules outside {LATENT_PACKAGES | LATENT_MODULES} read latent truth: {offenders}"


LEAKS = [
    "def features(world):\n    return world.latent.users['aesthetic_pref']\n",
    "def features(world):\n    return getattr(world, 'latent').users\n",
    "from retrieval_lib.marketplace.data import LatentTruth\n",
    "from retrieval_lib.marketplace import LatentTruth\n",
    "from retrieval_lib.marketplace import behaviour\n",
    "import retrieval_lib.marketplace.behaviour\n",
    "from retrieval_lib.marketplace.behaviour import purchase_probability\n",
]


@pytest.mark.parametrize("leak", LEAKS)
def test_the_scanner_would_catch_a_leak(tmp_path, leak):
    path = tmp_path / "model.py"
    path.write_text(leak)
    assert _latent_uses(path)


@pytest.mark.parametrize("where, caught", [
    ("models/unified.py", True), ("features/history.py", True), ("serving/search.py", True),
    ("evaluation/metrics.py", True), ("evaluation/logged.py", True),  # evaluation/ is not a blanket pass
    ("offline.py", True), ("marketplace.py", True),  # an allowed name elsewhere does not count
    ("evaluation/offline.py", False), ("evaluation/probes.py", False), ("marketplace/world.py", False),
])
def test_the_allow_list_is_strict(tmp_path, where, caught):
    lib = tmp_path / "retrieval_lib"
    (lib / where).parent.mkdir(parents=True, exist_ok=True)
    (lib / where).write_text(LEAKS[0])
    (lib / "clean.py").write_text("def features(world):\n    return world.observed.users\n")
    assert bool(_offenders(lib)) is caught


ROOT = LIB.parent
#: Code that chooses the book's settings or its served system: the benchmark scripts (the choice sweeps
#: and the studies), the library (``pipeline.py`` among it) and the book's build. It may score the
#: validation window only on what a marketplace logs (``EvaluationSet.from_logged_purchases``), never on
#: the buyers' latent whole-catalogue choices (``EvaluationSet.build(world, "valid")``).
CHOICE_CODE = [*sorted((ROOT / "benchmarks").glob("*.py")), *sorted(LIB.rglob("*.py")), ROOT / "book" / "build.py"]


def _latent_validation_scores(path: Path) -> list[str]:
    """``EvaluationSet.build`` calls whose window is ``"valid"``, or not a literal at all (a variable may
    hold ``"valid"``), outside the library function that forwards its own ``split`` argument."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "build"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "EvaluationSet"):
            continue
        split = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "split"), ast.Constant("test"))
        if not (isinstance(split, ast.Constant) and split.value == "test"):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_choices_are_scored_on_logged_purchases_only():
    assert len(CHOICE_CODE) > 30 and all(p.is_file() for p in CHOICE_CODE)
    assert {"negative_choices.py", "validation_choices.py", "loss_choices.py"} <= {p.name for p in CHOICE_CODE}
    forwarding = LIB / "evaluation" / "offline.py"  # evaluate(world, split): the caller picks the window
    offenders = [use for path in CHOICE_CODE for use in _latent_validation_scores(path)
                 if not (path == forwarding and len(_latent_validation_scores(path)) == 1)]
    assert not offenders, f"choices scored on the latent validation labels: {offenders}"


@pytest.mark.parametrize("code, caught", [
    ('valid = EvaluationSet.build(world, "valid")\n', True),
    ('valid = EvaluationSet.build(world, split="valid", max_sessions=100)\n', True),
    ("valid = EvaluationSet.build(world, args.split)\n", True),
    ('test = EvaluationSet.build(world, "test")\n', False),
    ("test = EvaluationSet.build(world)\n", False),
    ('valid = EvaluationSet.from_logged_purchases(world, "valid")\n', False),
])
def test_the_choice_scanner_would_catch_a_latent_validation_score(tmp_path, code, caught):
    path = tmp_path / "choice.py"
    path.write_text(code)
    assert bool(_latent_validation_scores(path)) is caught
