import json
import re

import numpy as np
import pytest

from retrieval_lib.infra import results
from retrieval_lib.infra.results import META_KEY, RESULTS_ENV, bind, deterministic, load, metadata, record, results_path
from retrieval_lib.marketplace import MarketplaceConfig

TINY = MarketplaceConfig.preset("tiny")
TINY_META = {"preset": "tiny", "world": TINY.fingerprint()}


@pytest.fixture(autouse=True)
def bound(monkeypatch):
    """Every test starts unbound (the binding is module state) and binds the tiny preset."""
    monkeypatch.setattr(results, "_bound", None)
    bind(TINY)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "out" / "results.json"


def test_record_writes_a_flat_sorted_json(path):
    assert record("zeta.recall@10.all", 0.25, path=path) is None
    assert record("alpha.n_requests", 12, path=path) is None
    assert record("bm25.recall@100.tail", 0.5, path=path) is None
    text = path.read_text()
    data = json.loads(text)
    numbers = {"alpha.n_requests": 12, "bm25.recall@100.tail": 0.5, "zeta.recall@10.all": 0.25}
    assert data == {META_KEY: TINY_META, **numbers}
    assert list(data) == sorted(data)
    assert load(path) == numbers
    assert not list(path.parent.glob("*.tmp"))


def test_record_overwrites_an_existing_key(path):
    record("a.b", 1.0, path=path)
    record("a.b", 2.5, path=path)
    assert load(path) == {"a.b": 2.5}


def test_record_uses_the_environment_variable(tmp_path, monkeypatch):
    target = tmp_path / "env" / "res.json"
    monkeypatch.setenv(RESULTS_ENV, str(target))
    assert results_path() == target
    record("pop.recall@100.all", 0.125)
    assert json.loads(target.read_text()) == {META_KEY: TINY_META, "pop.recall@100.all": 0.125}
    assert load() == {"pop.recall@100.all": 0.125}
    assert metadata() == TINY_META


def test_load_of_a_missing_file_is_empty(tmp_path):
    assert load(tmp_path / "nothing.json") == {}


@pytest.mark.parametrize("key", [
    "BM25.recall", "bm25.Recall", "recall", "bm25 recall.all", "bm25.recall all", " a.b", "a..b", ".a.b",
    "a.b.", "a-b.c", "", "a/b.c",
])
def test_invalid_keys_are_rejected_by_name(path, key):
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        record(key, 1.0, path=path)
    assert not path.exists()


def test_non_string_key_is_rejected(path):
    with pytest.raises(ValueError, match="key"):
        record(12, 1.0, path=path)


def test_key_with_a_trailing_newline_is_rejected(path):
    # KEY_PATTERN ends in "$", which also matches just before a final "\n"; the key is not a word.
    with pytest.raises(ValueError, match="key"):
        record("bm25.recall\n", 1.0, path=path)


@pytest.mark.parametrize("value", [
    "0.5", None, [1.0], {"x": 1}, True, False, np.bool_(True), float("nan"), float("inf"), -float("inf"),
    np.float64("nan"), np.float32("inf"), 1 + 0j,
])
def test_invalid_values_are_rejected(path, value):
    with pytest.raises(ValueError, match="bm25.recall"):
        record("bm25.recall", value, path=path)
    assert not path.exists()


def test_numpy_complex_is_rejected_like_python_complex(path):
    # a numpy complex is an np.number, so it passes the type check and loses its imaginary part
    with pytest.raises(ValueError, match="number"):
        record("a.b", np.complex128(1 + 2j), path=path)


@pytest.mark.parametrize("value, expected, kind", [
    (np.int64(7), 7, int), (np.int32(-3), -3, int), (np.uint8(200), 200, int),
    (np.float64(0.75), 0.75, float), (np.float32(0.5), 0.5, float), (3, 3, int), (0.1, 0.1, float),
])
def test_numpy_numbers_are_stored_as_python_numbers(path, value, expected, kind):
    record("a.b", value, path=path)
    loaded = load(path)["a.b"]
    assert type(loaded) is kind and loaded == expected


@pytest.mark.parametrize("garbage", ["not json at all {", "[1, 2, 3]", "42", b"\xff\xfe\x00garbage"])
def test_a_corrupted_file_is_replaced_with_a_warning(path, garbage):
    path.parent.mkdir(parents=True)
    if isinstance(garbage, bytes):
        path.write_bytes(garbage)
    else:
        path.write_text(garbage)
    with pytest.raises(ValueError, match="results"):
        load(path)
    with pytest.warns(UserWarning, match="fresh results file"):
        assert record("a.b", 2, path=path) is None
    assert load(path) == {"a.b": 2}


def test_deterministic_drops_timings():
    data = {"bm25.index_seconds": 3.2, "bm25.recall@100.all": 0.4, "seconds.count": 2, "a.b_seconds_x": 1,
            "x.heavy_over_light_time_ratio": 4.0, "service.saturation_rps": 310.0}
    assert deterministic(data) == {"bm25.recall@100.all": 0.4, "seconds.count": 2, "a.b_seconds_x": 1}
    assert deterministic({}) == {}


def test_results_path_finds_the_book(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "book" / "_config.yml").write_text("title: test\n")
    inner = root / "notebooks" / "deep"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    expected = root.resolve() / "book" / "_build" / "results.json"
    assert results_path() == expected
    record("a.b", 1, glue=False)
    assert json.loads(expected.read_text()) == {META_KEY: TINY_META, "a.b": 1}
    monkeypatch.chdir(root)
    assert results_path() == expected


def test_results_path_falls_back_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    (tmp_path / "book").mkdir()  # a book folder without _config.yml does not count
    monkeypatch.chdir(tmp_path)
    assert results_path() == tmp_path.resolve() / "results.json"


def test_empty_environment_variable_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_ENV, "")
    monkeypatch.chdir(tmp_path)
    assert results_path() == tmp_path.resolve() / "results.json"


def test_glue_outside_a_notebook_is_a_no_op(path):
    assert results.record("a.b", 0.5, path=path, glue=True) is None
    assert load(path) == {"a.b": 0.5}


# --- the world tag -------------------------------------------------------------------------------

def test_record_without_bind_is_an_error(path, monkeypatch):
    monkeypatch.setattr(results, "_bound", None)
    with pytest.raises(RuntimeError, match="bind"):
        record("a.b", 1.0, path=path)
    assert not path.exists()


def test_bind_takes_a_world_or_a_config_and_nothing_else(tiny_world, path):
    bind(tiny_world)
    record("a.b", 1, path=path)
    assert metadata(path) == {"preset": "tiny", "world": tiny_world.config.fingerprint()}
    assert metadata(path) == TINY_META  # the tiny world is the tiny preset with seed 0
    for wrong in ("tiny", None, {"name": "tiny"}, object()):
        with pytest.raises(TypeError, match="bind"):
            bind(wrong)


def test_the_file_carries_the_world_tag(path):
    record("a.b", 1.5, path=path)
    raw = json.loads(path.read_text())
    assert raw[META_KEY] == TINY_META == metadata(path)
    assert set(metadata(path)) == {"preset", "world"}


@pytest.mark.parametrize("other", [
    MarketplaceConfig.preset("book"),  # another preset
    MarketplaceConfig.preset("tiny", seed=1),  # the same preset with another seed
    MarketplaceConfig.preset("tiny", n_days=30),  # the same name, another config
])
def test_recording_for_another_world_starts_a_fresh_file(path, other):
    record("a.b", 1.0, path=path)
    record("a.c", 2.0, path=path)
    bind(other)
    with pytest.warns(UserWarning, match="another world"):
        record("x.y", 3.0, path=path)
    assert load(path) == {"x.y": 3.0}  # the old world's keys are gone, not mixed in
    assert metadata(path) == {"preset": other.name, "world": other.fingerprint()}


def test_the_same_world_keeps_its_keys(path, recwarn):
    record("a.b", 1.0, path=path)
    bind(MarketplaceConfig.preset("tiny"))  # bound again (a new chapter) to an equal world
    record("a.c", 2.0, path=path)
    assert load(path) == {"a.b": 1.0, "a.c": 2.0}
    assert metadata(path) == TINY_META
    assert not [w for w in recwarn if "world" in str(w.message)]


def test_an_untagged_file_is_another_world(path):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"a.b": 1.0}))  # written before results were tagged
    assert metadata(path) == {}
    with pytest.warns(UserWarning, match="another world"):
        record("a.c", 2.0, path=path)
    assert load(path) == {"a.c": 2.0}


def test_load_never_returns_the_tag(path, tmp_path):
    record("a.b", 1.0, path=path)
    assert META_KEY in json.loads(path.read_text())
    assert META_KEY not in load(path) and load(path) == {"a.b": 1.0}
    assert all(isinstance(v, int | float) for v in load(path).values())
    assert metadata(tmp_path / "nothing.json") == {}


def test_deterministic_works_on_loaded_results(path):
    record("bm25.recall@100.all", 0.4, path=path)
    record("bm25.index_seconds", 3.2, path=path)
    assert deterministic(load(path)) == {"bm25.recall@100.all": 0.4}


def test_a_tag_that_is_not_an_object_starts_a_fresh_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"_meta": "tiny", "old.key": 1}))
    with pytest.warns(UserWarning, match="another world"):
        results.record("new.key", 2, path=path, glue=False)
    assert results.load(path) == {"new.key": 2}


def test_glue_log_keeps_the_first_cell_that_glued_each_key(tmp_path):
    log = tmp_path / "ch.tsv"
    log.write_text("a.b\t2\nc.d\t3\na.b\t5\n")
    assert results.glue_log(log) == {"a.b": 2, "c.d": 3}


def test_prose_that_quotes_a_figure_glued_below_it_is_reported(tmp_path):
    import nbformat

    from retrieval_lib.infra import chapters

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("setup()"),  # execution count 1
        nbformat.v4.new_markdown_cell("Early: {glue:text}`x.late:.3f` and {glue}`x.early`."),
        nbformat.v4.new_code_cell("   "),  # empty: not executed, not counted
        nbformat.v4.new_code_cell("record('x.late')"),  # execution count 2
        nbformat.v4.new_markdown_cell("Later: {glue:text}`x.late:.1%`, {glue:text}`other.ipynb::x.late:.2f`, "
                                      "`x.never` and {glue:text}`x.unlogged:.2f`."),
    ]
    path = tmp_path / "07_toy.ipynb"
    nbformat.write(nb, path)
    late = chapters.glued_before_quoted(path, {"x.early": 1, "x.late": 2})
    assert late == ["07_toy.ipynb: markdown after code cell 1 quotes 'x.late', glued in code cell 2"]
    assert chapters.glued_before_quoted(path, {"x.early": 1, "x.late": 1}) == []


def test_merge_keeps_chapter_order_and_the_last_value_of_a_key(tmp_path):
    first, second, out = tmp_path / "01.json", tmp_path / "02.json", tmp_path / "results.json"
    record("a.b", 1.0, path=first)
    record("a.shared", 1.0, path=first)
    record("c.d", 2.0, path=second)
    record("a.shared", 2.0, path=second)
    merged = results.merge([first, tmp_path / "missing.json", second], out)
    assert load(out) == {"a.b": 1.0, "a.shared": 2.0, "c.d": 2.0}  # as if recorded one after the other
    assert metadata(out) == TINY_META and merged[META_KEY] == TINY_META
    assert list(json.loads(out.read_text())) == sorted(json.loads(out.read_text()))


def test_merge_refuses_files_of_two_worlds(tmp_path):
    first, second, out = tmp_path / "01.json", tmp_path / "02.json", tmp_path / "results.json"
    record("a.b", 1.0, path=first)
    bind(MarketplaceConfig.preset("book"))
    record("c.d", 2.0, path=second)
    with pytest.raises(ValueError, match="another world"):
        results.merge([first, second], out)
    assert not out.exists()  # nothing half-written


def test_merge_of_nothing_writes_an_empty_file(tmp_path):
    out = tmp_path / "results.json"
    assert results.merge([tmp_path / "missing.json"], out) == {}
    assert load(out) == {}
