"""Run the search service: ``python -m retrieval_lib.service --preset tiny --port 8000``.

Generates (or loads) the world, builds the complete system through the artifact cache
(:func:`retrieval_lib.pipeline.build_system`: loaded in seconds once the chapters have run, trained
otherwise), and serves it with uvicorn in one process (:mod:`retrieval_lib.service.app`): the event loop
answers HTTP, and the searches run one at a time in a worker thread, with one torch thread. The model and
the index load once, at start-up.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch
import uvicorn

from retrieval_lib.marketplace import PRESETS, generate
from retrieval_lib.pipeline import build_system
from retrieval_lib.service.app import create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``--preset``, ``--seed``, ``--host``, ``--port``."""
    parser = argparse.ArgumentParser(prog="python -m retrieval_lib.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="book", choices=sorted(PRESETS), help="the world to serve")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1 to 65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the system, then serve it until interrupted."""
    args = parse_args(argv)
    start = time.perf_counter()
    # built (or trained, on a cold cache) with the book's thread count: the weights depend on it
    retriever = build_system(generate(args.preset, seed=args.seed, cache=True))
    torch.set_num_threads(1)  # one search at a time on one thread; more processes scale out
    # the built system is some 270,000 long-lived objects, and a full collection of them took ~150 ms, a
    # stall for every request in flight; frozen, the collector scans only what requests allocate
    gc.collect()
    gc.freeze()
    print(f"system for preset {args.preset!r} ready in {time.perf_counter() - start:.1f} s; "
          f"serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(retriever), host=args.host, port=args.port, log_level="warning", workers=1)


if __name__ == "__main__":
    main()
