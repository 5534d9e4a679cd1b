"""Regenerate the cross-machine canary's reference: every chapter on the tiny world, pinned numerics.

    .venv/bin/python benchmarks/tiny_reference.py

Runs the chapters exactly as ``tests/test_book.py`` does (one thread, an empty artifact cache) and
writes their deterministic figures to ``tests/data/tiny_reference.json``. Beside it runs them once more
with MKL on another code path (``MKL_CBWR=COMPATIBLE``, SSE2 kernels) and lists the figures both runs
share as ``vendor_free``: the ones a machine with another CPU vendor, where MKL dispatches by its own
rules, must repeat too (``retrieval_lib.infra.chapters.canary_figures``). Run it after a change that
is meant to move the tiny world's figures, and commit the file with the change; it says which CPU
made it, and only that kind of CPU repeats every figure.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from retrieval_lib.infra import chapters, results

#: The second run's MKL code path: SSE2 kernels without approximate reciprocals, on any x86-64 vendor.
OTHER_PATH = {"MKL_CBWR": "COMPATIBLE"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=chapters.REFERENCE, help="where to write the reference")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: (Path(tmp) / f"{name}.json", env) for name, env in (("pinned", None), ("other", OTHER_PATH))}
        procs = {name: chapters.start_run(chapters.chapters(), out, Path(tmp) / f"cache-{name}", env=env)
                 for name, (out, env) in runs.items()}
        figures = {}
        for name, proc in procs.items():
            log = proc.communicate()[0]
            if proc.returncode != 0:
                print(log[-5000:], file=sys.stderr)
                print(f"the {name} tiny run failed (exit {proc.returncode}); the reference was not written",
                      file=sys.stderr)
                return 1
            figures[name] = results.deterministic(json.loads(runs[name][0].read_text()))
    pinned, other = figures["pinned"], figures["other"]
    vendor_free = [key for key, value in pinned.items() if key in other and other[key] == value]
    if args.out.is_file():
        changed = chapters.differences(chapters.load_reference(args.out), pinned)
        print("\n".join(changed) if changed else "no figure changed")
    chapters.write_reference(pinned, args.out, vendor_free)
    print(f"wrote {args.out} ({len(pinned)} figures, {len(vendor_free)} the same on MKL's other code path) "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
