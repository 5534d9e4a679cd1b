"""Result files committed under ``book/data/``: written atomically, read with a clear error.

Seed studies and the A/A calibration are too costly for every book build, so a benchmark script writes
them once and the chapters read them. A write replaces the file in one step (a crash never leaves half
a file); a read of a missing file names the script that writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Write ``data`` as compact JSON to ``path`` (its folder created), replacing the file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    tmp.replace(path)


def read_json(path: str | Path, what: str, how: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``FileNotFoundError`` naming ``what`` and ``how`` to write it if it is missing.

    A file that is not a JSON object raises ``ValueError``; the caller checks its fields.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}; {how}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rewrite it: {how}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; rewrite it: {how}")
    return data
