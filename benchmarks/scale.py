"""Scale: how each stage's cost grows with the catalogue, from 10,000 to 1,000,000 listings (issue 29).

Usage: .venv/bin/python benchmarks/scale.py [--sizes 10000 30000 100000 300000 1000000] [--queries 1000]
Writes benchmarks/results/scale.json (committed) and benchmarks/results/scale.png; not part of
``make book`` or ``make test`` (the 1M row alone takes tens of minutes).

Each size runs in a fresh process, so that its peak memory is its own. Per size:

* the world: the ``large`` preset (1M listings) scaled down in every count (shops, users, sessions,
  archive), generated and timed (``generate_seconds``, ``peak_rss_mb`` of the whole process);
* encoding: the book world's trained pieces (its tokenizer, doc2query encoder, graph and served
  unified model, from the artifact cache: build the book first) encode the new world's catalogue, as a
  marketplace encodes listings its models have not seen. Their graph block is the cold-start zero
  vector. ``encode_per_second`` is listings per second through the frozen transformer block and the
  product tower, on 2 cores;
* search: query-tower vectors of a sample of the world's test sessions against every listing vector.
  ``exact_ms_per_query`` is batched exact inner-product top 100 (``serving.exact``), per query;
  hnswlib (M 16, ef_construction 200, built on 2 threads) is searched at a growing ``ef`` until
  recall@100 against the exact top 100 reaches 0.99, one query at a time, as a service sends them.

The parent fits each cost's growth exponent (the slope of log cost on log size) and plots them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
#: hnswlib's search effort, grown until recall@100 against exact reaches the higher target.
EFS = (100, 150, 200, 300, 400, 600, 800, 1200, 1600)
TARGETS = (0.95, 0.99)
#: Costs whose growth with the catalogue the parent fits.
COSTS = ("generate_seconds", "peak_rss_mb", "encode_seconds", "hnsw_build_seconds", "hnsw_ms_at_recall95",
         "hnsw_ms_at_recall99", "exact_ms_per_query")


def scaled_config(n_listings: int):
    """The ``large`` preset with every count scaled by ``n_listings / 1M`` (the preset itself at 1M)."""
    from retrieval_lib.marketplace.config import MarketplaceConfig

    large = MarketplaceConfig.preset("large")
    if n_listings == large.n_listings:
        return large
    share = n_listings / large.n_listings
    counts = {name: max(floor, round(getattr(large, name) * share)) for name, floor in
              (("n_shops", 40), ("n_users", 500), ("n_sessions", 4_000), ("n_archive_sessions", 4_000))}
    return dataclasses.replace(large, name=f"scale-{n_listings}", n_listings=n_listings, **counts)


def measure_size(n_listings: int, n_queries: int) -> dict:
    """Every cost of one catalogue size, in this process (run it in a fresh one)."""
    from retrieval_lib import prefetch
    from retrieval_lib.encoders.graph import graph_embeddings
    from retrieval_lib.encoders.transformer import encode_in_batches
    from retrieval_lib.features.unified import UnifiedFeatures
    from retrieval_lib.marketplace import generate
    from retrieval_lib.models.unified import UnifiedRetriever
    from retrieval_lib.pipeline import served_model
    from retrieval_lib.serving.ann import HNSWIndex, measure
    from retrieval_lib.serving.exact import exact_top_k
    from retrieval_lib.text.wordpiece import TokenizedTexts
    from retrieval_lib.text.words import listing_documents
    from retrieval_lib.training.pretraining import (
        ENCODER_CONFIG,
        PRETRAIN_CONFIG,
        doc2query_model,
        listing_tokenizer,
    )

    config = scaled_config(n_listings)
    start = time.perf_counter()
    world = generate(config, seed=0)
    row = {"listings": len(world.observed.listings), "users": config.n_users, "sessions": config.n_sessions,
           "generate_seconds": time.perf_counter() - start}

    # the book world's trained pieces (cached by `make book`), applied to this world's catalogue
    book = prefetch.book_world()
    observed, fingerprint = book.observed, book.config.fingerprint()
    tokenizer = listing_tokenizer(observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
    doc2query, _ = doc2query_model(observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG, progress=False)
    graph = graph_embeddings(observed, fingerprint)
    cold = dataclasses.replace(graph, listing_vectors=graph.listing_vectors[:0],
                               listing_in_graph=graph.listing_in_graph[:0])  # no listing of this world is in it
    model, _ = served_model(book)
    del book

    start = time.perf_counter()
    features = UnifiedFeatures.build(world.observed, tokenizer, doc2query.encoder, cold)
    row["features_seconds"] = time.perf_counter() - start  # histories and query vectors included
    # the frozen transformer block again, timed alone: the build above also timed histories and queries
    start = time.perf_counter()
    tokens = TokenizedTexts.of(tokenizer, listing_documents(world.observed.listings), ENCODER_CONFIG.max_len)
    encode_in_batches(doc2query.encoder.eval().pooled, tokens)
    block_seconds = time.perf_counter() - start
    start = time.perf_counter()
    retriever = UnifiedRetriever(model, features)  # the product tower over every listing
    tower_seconds = time.perf_counter() - start
    row["encode_seconds"] = block_seconds + tower_seconds
    row["encode_per_second"] = row["listings"] / row["encode_seconds"]
    items = retriever.listing_vectors.numpy()
    row["dim"] = items.shape[1]

    test = world.observed.split("test")
    sample = test.sample(min(n_queries, len(test)), random_state=0)
    queries = retriever.encode_sessions(sample).numpy()
    start = time.perf_counter()
    exact = exact_top_k(queries, items, 100)
    row["exact_ms_per_query"] = (time.perf_counter() - start) * 1000 / len(queries)

    index = HNSWIndex(m=16, ef_construction=200, seed=0, num_threads=2).build(items)
    row["hnsw_build_seconds"] = index.build_seconds
    row["hnsw_bytes_per_vector"] = index.bytes_per_vector()
    sweep = []
    for ef in EFS:
        index.ef = ef
        found = measure(index, queries, exact.ids, k=100, timed_queries=min(300, len(queries)))
        sweep.append({"ef": ef, "recall_vs_exact": found["recall_vs_exact"], "ms_per_query": found["ms_per_query"]})
        if found["recall_vs_exact"] >= max(TARGETS):
            break
    row["hnsw_sweep"] = sweep
    for target in TARGETS:
        reached = [s for s in sweep if s["recall_vs_exact"] >= target]
        key = f"hnsw_ms_at_recall{round(target * 100)}"
        row[key] = reached[0]["ms_per_query"] if reached else None  # None: not reached by the largest ef
        row[f"hnsw_ef_at_recall{round(target * 100)}"] = reached[0]["ef"] if reached else None
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def growth(rows: list[dict], cost: str) -> float | None:
    """The slope of log ``cost`` on log listings (1: linear) over the sizes where it was measured (None: too few)."""
    import numpy as np

    pairs = [(r["listings"], r[cost]) for r in rows if r.get(cost) is not None and r[cost] > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def plot(rows: list[dict], path: Path, machine: str) -> None:
    """Each cost against the catalogue size, log-log, one panel per kind of cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("seconds", ("generate_seconds", "encode_seconds", "hnsw_build_seconds")),
              ("ms per query", ("exact_ms_per_query", "hnsw_ms_at_recall95", "hnsw_ms_at_recall99")),
              ("peak memory, MB", ("peak_rss_mb",)))
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8))
    n = [r["listings"] for r in rows]
    for ax, (unit, costs) in zip(axes, panels, strict=True):
        for cost in costs:
            slope = growth(rows, cost)
            ax.plot(n, [r.get(cost) if r.get(cost) is not None else math.nan for r in rows], marker="o",
                    label=cost if slope is None else f"{cost} (size^{slope:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="listings", ylabel=unit)
        ax.legend(fontsize=7)
    fig.suptitle(f"Cost against catalogue size ({machine}, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Measure every size in a fresh process, then fit the growth exponents and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_size(args.child, args.queries)))
        return
    from retrieval_lib.infra.numerics import cpu

    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(size), "--queries", str(args.queries)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>9,}: " + ", ".join(f"{k} {row[k]:.4g}" for k in (*COSTS, "encode_per_second")
                                          if isinstance(row.get(k), float)), flush=True)
    result = {"command": "benchmarks/scale.py " + " ".join(sys.argv[1:]), "machine": cpu(), "cores": 2,
              "sizes": {str(r["listings"]): r for r in rows},
              "growth_exponent": {cost: growth(rows, cost) for cost in (*COSTS, "encode_per_second")}}
    (OUT / "scale.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    plot(rows, OUT / "scale.png", result["machine"])


if __name__ == "__main__":
    main()
