"""Load-test the search service over HTTP on loopback: QPS and latency percentiles at a few concurrencies.

Usage: .venv/bin/python benchmarks/load_test.py [--preset book] [--requests 2000] [--concurrency 1 4 16]
Starts ``python -m retrieval_lib.service`` (the system loads from the artifact cache; run the book, or
chapter 10, first for the book preset), sends the same test-window requests at each concurrency, and
writes benchmarks/results/load_test.json: one row per concurrency, plus the median latency of each
stage of a request (from the ``Server-Timing`` header) at concurrency 1. Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retrieval_lib.marketplace import generate
from retrieval_lib.service.loadtest import ServiceProcess, latency_breakdown, load_test

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Run the load test and write its JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="book")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    test = generate(args.preset, seed=0, cache=True).observed.split("test")
    sample = test.sample(args.requests, random_state=0, replace=len(test) < args.requests)
    bodies = [{"query": q, "user_id": int(u), "top_n": 10}
              for q, u in zip(sample["query"], sample["user_id"], strict=True)]
    rows, breakdown = [], {}
    with ServiceProcess(args.preset) as service:
        print(f"service ready in {service.start_seconds:.1f} s at {service.url}")
        for concurrency in args.concurrency:
            run = load_test(service.url, bodies, concurrency=concurrency)
            rows.append(run.summary())
            print(json.dumps({k: round(v, 2) for k, v in rows[-1].items()}))
            if concurrency == 1:
                breakdown = {k: round(v, 3) for k, v in latency_breakdown(run).items()}
                print("median ms per stage:", breakdown)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load_test.json").write_text(json.dumps({"preset": args.preset, "runs": rows,
                                                    "stage_ms_at_concurrency_1": breakdown}, indent=1))


if __name__ == "__main__":
    main()
