"""Benchmarks: generation time and peak memory per preset, and book build time per chapter.

Usage: .venv/bin/python benchmarks/run_benchmarks.py [--presets tiny book large] [--book]
Writes benchmarks/results/generation.json and, with --book, benchmarks/results/book.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"

CHILD = """
import json, resource, time
from retrieval_lib.marketplace import generate
start = time.perf_counter()
world = generate({preset!r}, seed=0, progress=True)
seconds = time.perf_counter() - start
peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({{"preset": {preset!r}, "seconds": seconds, "peak_rss_gib": peak_gib, **world.summary()}}))
"""


def bench_generation(preset: str) -> dict:
    """Generate one preset in a fresh process (so peak memory is that preset's alone)."""
    proc = subprocess.run([sys.executable, "-c", CHILD.format(preset=preset)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT, check=True)  # progress bars go to stderr, straight to the terminal
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_book() -> dict:
    """Build the book and read when each chapter and job (``retrieval_lib.prefetch``) started and how long it ran."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "book" / "build.py")], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ})
    total = time.perf_counter() - start
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    chapters = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\d\d_\w+): executed in (\d+) s$", log, re.M)}
    jobs = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): trained in (\d+) s$", log, re.M)}
    starts = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): started at (\d+) s$", log, re.M)}
    return {"exit_code": proc.returncode, "total_seconds": total, "chapter_seconds": chapters,
            "job_seconds": jobs, "started_at_seconds": starts}


def main() -> None:
    """Run the selected benchmarks and write their JSON files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="*", default=["tiny", "book", "large"])
    parser.add_argument("--book", action="store_true", help="also time a full book build")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.presets:
        row = bench_generation(preset)
        print(f"{preset:>6}: {row['seconds']:7.1f} s, peak {row['peak_rss_gib']:.2f} GiB, "
              f"{row['listings']:,} listings, {row['impressions']:,} impressions, {row['clicks']:,} clicks")
        rows.append(row)
    (OUT / "generation.json").write_text(json.dumps(rows, indent=1))
    if args.book:
        book = bench_book()
        print(json.dumps(book, indent=1))
        (OUT / "book.json").write_text(json.dumps(book, indent=1))


if __name__ == "__main__":
    main()
