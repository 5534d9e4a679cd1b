import json

import pytest

from retrieval_lib.cache import artifact_key, cache_dir, cached


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
        assert cached("thing", {"a": 1}, compute, _save, _load, directory=tmp_path) == {"x": 1}
    assert len(calls) == 1
    cached("thing", {"a": 2}, compute, _save, _load, directory=tmp_path)
    assert len(calls) == 2  # other parts, other artifact


def test_corrupted_artifact_is_recomputed(tmp_path):
    cached("thing", {"a": 1}, lambda: [1, 2], _save, _load, directory=tmp_path)
    folder = tmp_path / artifact_key("thing", {"a": 1})
    (folder / "value.json").write_text("{not json")
    with pytest.warns(UserWarning, match="recomputing"):
        assert cached("thing", {"a": 1}, lambda: [1, 2], _save, _load, directory=tmp_path) == [1, 2]
    assert _load(folder) == [1, 2]


def test_failed_save_leaves_nothing_half_written(tmp_path):
    def bad_save(value, folder):
        (folder / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        cached("thing", {"a": 1}, lambda: 1, bad_save, _load, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_keys_are_stable_and_names_checked():
    assert artifact_key("graph", {"b": 1, "a": 2}) == artifact_key("graph", {"a": 2, "b": 1})
    assert artifact_key("graph", {"a": 1}) != artifact_key("graph", {"a": 2})
    with pytest.raises(ValueError):
        artifact_key("../evil", {})


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
