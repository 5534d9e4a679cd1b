import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from retrieval_lib.encoders.graph import Node2VecConfig, fit_graph_embeddings
from retrieval_lib.encoders.transformer import ListingEncoder, TransformerConfig
from retrieval_lib.features.history import user_histories
from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra import cache, numerics
from retrieval_lib.infra.cache import artifact_key, cache_dir, cached, source_digest

ROOT = Path(__file__).resolve().parents[1]
#: The module whose source keys the toy artifacts below.
CODE = "retrieval_lib.infra.cache"


def _save(value, folder):
    (folder / "value.json").write_text(json.dumps(value))


def _load(folder):
    return json.loads((folder / "value.json").read_text())


def test_computes_once_then_loads(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": 1}

    for _ in range(3):
        assert cached("thing", {"a": 1}, compute, _save, _load, code=CODE, directory=tmp_path) == {"x": 1}
    assert len(calls) == 1
    cached("thing", {"a": 2}, compute, _save, _load, code=CODE, directory=tmp_path)
    assert len(calls) == 2  # other parts, other artifact


def test_other_numeric_code_paths_give_another_artifact(tmp_path, monkeypatch):
    """An artifact trained on other kernels (unpinned, another thread count) is never served as the book's."""
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert cached("thing", {}, compute, _save, _load, code=CODE, directory=tmp_path) == 1
    real = numerics.describe()
    for changed in ({"torch.cpu_capability": "AVX512"}, {"torch.threads": "8"}, {"MKL_CBWR": "(unset)"}):
        monkeypatch.setattr(numerics, "describe", lambda changed=changed: {**real, **changed})
        assert cached("thing", {}, compute, _save, _load, code=CODE, directory=tmp_path) == len(calls)
    assert len(calls) == 4
    monkeypatch.setattr(numerics, "describe", lambda: real)
    assert cached("thing", {}, compute, _save, _load, code=CODE, directory=tmp_path) == 1  # the first, loaded


def test_corrupted_artifact_is_recomputed(tmp_path):
    cached("thing", {"a": 1}, lambda: [1, 2], _save, _load, code=CODE, directory=tmp_path)
    (folder,) = tmp_path.iterdir()  # the key also holds the code digest, so find the one artifact
    assert folder.name.startswith("thing-")
    (folder / "value.json").write_text("{not json")
    with pytest.warns(UserWarning, match="recomputing"):
        assert cached("thing", {"a": 1}, lambda: [1, 2], _save, _load, code=CODE, directory=tmp_path) == [1, 2]
    assert _load(folder) == [1, 2]


def test_failed_save_leaves_nothing_half_written(tmp_path):
    def bad_save(value, folder):
        (folder / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        cached("thing", {"a": 1}, lambda: 1, bad_save, _load, code=CODE, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_keys_are_stable_and_names_checked():
    assert artifact_key("graph", {"b": 1, "a": 2}) == artifact_key("graph", {"a": 2, "b": 1})
    assert artifact_key("graph", {"a": 1}) != artifact_key("graph", {"a": 2})
    with pytest.raises(ValueError):
        artifact_key("../evil", {})


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_tests_never_write_into_the_repository_cache():
    # conftest points $RETRIEVAL_LIB_CACHE at a temporary folder for the whole session
    assert not cache_dir().resolve().is_relative_to((ROOT / ".cache").resolve())
    assert not cache_dir().resolve().is_relative_to(ROOT.resolve())


# --- the code part of the key: a fake package tree, so the real one is never touched ---------------

FAKE_PACKAGE = {
    "__init__.py": "",
    "top.py": "from retrieval_lib.mid import helper\n\nVALUE = helper()\n",
    "mid.py": "import numpy\nfrom retrieval_lib import leaf\n\ndef helper():\n    return leaf.X\n",
    "leaf.py": "X = 1\n",
    "other.py": "Y = 2\n",
    "sub/__init__.py": "",
    "sub/deep.py": "import retrieval_lib.leaf\n",
    "via_sub.py": "from retrieval_lib.sub.deep import something\n",
    "relative.py": "from .leaf import X\n",
}


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A tiny ``retrieval_lib`` tree: top -> mid -> leaf (two import styles), other and sub.deep apart."""
    root = tmp_path / "pkg" / "retrieval_lib"
    for name, text in FAKE_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(cache, "PACKAGE_DIR", root)
    source_digest.cache_clear()
    yield root
    source_digest.cache_clear()


def _edit(path: Path, text: str = "# edited\n") -> None:
    path.write_text(path.read_text() + text)
    source_digest.cache_clear()  # the digest is memoised per process, as the package does not change under it


@pytest.mark.parametrize("edited, changes", [
    ("top.py", True), ("mid.py", True), ("leaf.py", True),  # the module and what it imports, transitively
    ("__init__.py", True),  # mid's "from retrieval_lib import leaf" runs the package's __init__ too
    ("other.py", False), ("sub/deep.py", False), ("sub/__init__.py", False),  # modules it does not import
])
def test_source_digest_follows_imports_transitively(fake_package, edited, changes):
    before = source_digest(("retrieval_lib.top",))
    assert before == source_digest(("retrieval_lib.top",))
    _edit(fake_package / edited)
    assert (source_digest(("retrieval_lib.top",)) != before) is changes


@pytest.mark.parametrize("module, edited", [
    ("retrieval_lib.via_sub", "sub/__init__.py"),  # importing sub.deep runs sub/__init__.py first
    ("retrieval_lib.via_sub", "leaf.py"),  # ... and what sub.deep imports
    ("retrieval_lib.relative", "leaf.py"),  # a relative import is followed too
])
def test_source_digest_covers_package_inits_and_relative_imports(fake_package, module, edited):
    before = source_digest((module,))
    _edit(fake_package / edited)
    assert source_digest((module,)) != before


def test_source_digest_of_a_subpackage_module_and_of_several_modules(fake_package):
    deep = source_digest(("retrieval_lib.sub.deep",))
    both = source_digest(("retrieval_lib.sub.deep", "retrieval_lib.other"))
    assert both != deep
    assert both == source_digest(("retrieval_lib.other", "retrieval_lib.sub.deep"))  # order does not matter
    _edit(fake_package / "leaf.py")  # imported by sub.deep with a plain "import"
    edited = source_digest(("retrieval_lib.sub.deep",))
    assert edited != deep
    _edit(fake_package / "top.py")  # imported by neither
    assert source_digest(("retrieval_lib.sub.deep",)) == edited


@pytest.mark.parametrize("module", ["retrieval_lib.nope", "numpy", "retrieval_lib.top.VALUE", "retrieval"])
def test_unknown_module_is_a_value_error(fake_package, module):
    with pytest.raises(ValueError, match="not a module of retrieval_lib"):
        source_digest((module,))
    with pytest.raises(ValueError, match="not a module of retrieval_lib"):
        cached("thing", {}, lambda: 1, _save, _load, code=module, directory=fake_package.parent / "c")


def test_cached_recomputes_after_the_code_changes(fake_package, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    def get():
        return cached("thing", {"a": 1}, compute, _save, _load, code="retrieval_lib.top", directory=tmp_path / "c")

    assert get() == 1 and get() == 1
    _edit(fake_package / "other.py")  # unrelated: still served from the cache
    assert get() == 1
    _edit(fake_package / "leaf.py")  # imported through mid: a new key, recomputed
    assert get() == 2 and get() == 2
    assert len(calls) == 2 and len(list((tmp_path / "c").iterdir())) == 2
    codes = {json.loads((f / "parts.json").read_text())["code"] for f in (tmp_path / "c").iterdir()}
    assert len(codes) == 2  # same parts, two code digests


def test_cached_code_accepts_several_modules(fake_package, tmp_path):
    calls = []

    def get():
        return cached("thing", {}, lambda: calls.append(1) or len(calls), _save, _load,
                      code=["retrieval_lib.other", "retrieval_lib.sub.deep"], directory=tmp_path / "c")

    assert get() == 1
    _edit(fake_package / "other.py")
    assert get() == 2
    _edit(fake_package / "mid.py")  # neither module imports mid
    assert get() == 2


def test_real_package_digest_covers_the_real_imports(tmp_path, monkeypatch):
    # a copy of the real package: editing a module that graph embeddings import changes their code key
    copy = tmp_path / "retrieval_lib"
    shutil.copytree(cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", copy)
    source_digest.cache_clear()
    try:
        graph = source_digest(("retrieval_lib.encoders.graph",))
        _edit(copy / "serving" / "search.py")  # not imported by the graph module
        assert source_digest(("retrieval_lib.encoders.graph",)) == graph
        _edit(copy / "marketplace" / "data.py")  # imported through retrieval_lib.marketplace
        assert source_digest(("retrieval_lib.encoders.graph",)) != graph
    finally:
        source_digest.cache_clear()


# --- the features' part of a model's key --------------------------------------------------------

@pytest.fixture(scope="module")
def features(tiny_world, tiny_tokenizer):
    torch.manual_seed(0)
    encoder = ListingEncoder(TransformerConfig(vocab_size=1000, dim=16, heads=2, layers=1, ff_dim=32))
    graph = fit_graph_embeddings(tiny_world.observed, Node2VecConfig(dim=8, num_walks=2, walk_length=8))
    return UnifiedFeatures.build(tiny_world.observed, tiny_tokenizer, encoder, graph, n_buckets=2**14, max_history=8)


def test_features_digest_covers_the_history_settings(features):
    digest = features.digest()
    assert digest == features.digest()
    # a shorter history limit: another history, so models trained on it get another cache key
    shorter = user_histories(features.observed, 4, current=True)
    assert shorter.item.shape[1] == 4 != features.history.item.shape[1]
    other = dataclasses.replace(features, history=shorter, history_vectors=features.token_means(shorter.texts))
    assert other.digest() != digest
    # any one history array or the history items' vectors
    h = features.history
    kind = h.kind.copy()
    kind[kind >= 0] = (kind[kind >= 0] + 1) % 3
    changed = [
        dataclasses.replace(features, history=dataclasses.replace(h, kind=kind)),
        dataclasses.replace(features, history=dataclasses.replace(h, listing=h.listing[::-1].copy())),
        dataclasses.replace(features, history=dataclasses.replace(h, texts=[*h.texts[:-1], h.texts[-1] + " x"])),
        dataclasses.replace(features, history_vectors=features.history_vectors + 1e-3),
        dataclasses.replace(features, n_buckets=2**15),
    ]
    assert len({c.digest() for c in changed} | {digest}) == len(changed) + 1
