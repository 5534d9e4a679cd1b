"""Regenerate the cross-machine canary's reference: every chapter on the tiny world, pinned numerics.

    .venv/bin/python benchmarks/tiny_reference.py

Runs the chapters exactly as ``tests/test_book.py`` does (one thread, an empty artifact cache) and
writes their deterministic figures to ``tests/data/tiny_reference.json``. Run it after a change that is
meant to move the tiny world's figures, and commit the file with the change.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from retrieval_lib.infra import chapters, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=chapters.REFERENCE, help="where to write the reference")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        proc = chapters.start_run(chapters.chapters(), out, Path(tmp) / "cache")
        log = proc.communicate()[0]
        if proc.returncode != 0:
            print(log[-5000:], file=sys.stderr)
            print(f"the tiny run failed (exit {proc.returncode}); the reference was not written", file=sys.stderr)
            return 1
        figures = json.loads(out.read_text())
    if args.out.is_file():
        changed = chapters.differences(chapters.load_reference(args.out), results.deterministic(figures))
        print("\n".join(changed) if changed else "no figure changed")
    chapters.write_reference(figures, args.out)
    print(f"wrote {args.out} ({len(figures)} figures) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
