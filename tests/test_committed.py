"""Committed result files: atomic JSON writes, and reads that fail clearly."""

import pytest

from retrieval_lib.infra.committed import read_json, write_json


def test_write_then_read_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "data" / "study.json"
    write_json({"a": [1, 2.5], "b": {"c": "d"}}, path)
    assert read_json(path, "study", "run it") == {"a": [1, 2.5], "b": {"c": "d"}}
    assert path.read_text() == '{"a":[1,2.5],"b":{"c":"d"}}\n'
    assert [p.name for p in path.parent.iterdir()] == ["study.json"]
    write_json({"a": 1}, path)  # replaces the file
    assert read_json(path, "study", "run it") == {"a": 1}


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no seed study at .*; run benchmarks/x.py"):
        read_json(tmp_path / "missing.json", "seed study", "run benchmarks/x.py")
    (tmp_path / "half.json").write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match="not valid JSON.*run benchmarks/x.py"):
        read_json(tmp_path / "half.json", "seed study", "run benchmarks/x.py")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_json(tmp_path / "list.json", "seed study", "run benchmarks/x.py")
