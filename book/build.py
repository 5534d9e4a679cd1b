"""Execute every chapter and build the HTML book strictly (what `make book` runs).

Results recorded by the chapters land in book/_build/results.json (started afresh on every build).
Set RETRIEVAL_LIB_PRESET=tiny for a quick smoke build. Importing retrieval_lib pins the numeric code
paths in this process's environment, which every chapter's kernel inherits (and pins again itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from retrieval_lib.infra import numerics

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Build the book; return the process exit code."""
    build = ROOT / "book" / "_build"
    results = build / "results.json"
    build.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    env = {**os.environ, "RETRIEVAL_LIB_RESULTS": str(results), "TQDM_DISABLE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", "book/_config.yml",
           "--toc", "book/_toc.yml", "--path-output", "book", "--all", "-W", "--keep-going"]
    print(f"numeric code paths: {numerics.describe()} (pinned: {numerics.pinned()})")
    start = time.perf_counter()
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"book build finished in {time.perf_counter() - start:.0f} s with exit code {code}")
    if code == 0 and not (build / "html" / "index.html").is_file():
        print("error: book/_build/html/index.html was not written", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
