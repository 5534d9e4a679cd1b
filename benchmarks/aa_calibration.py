"""Issue 26's A/A calibration: many simulated A/A tests, to check that the lift's interval covers 0 at 95%.

Each A/A test shows the control page twice, with two fresh sets of random numbers, to the same random
share of the test window's buyers, and records the lift and its buyer-bootstrap interval
(:func:`~retrieval_lib.simulation.abtest.aa_calibration`). Two simulated arms per test make it too slow
for every book build, so the runs are committed under ``book/data/`` with the command, the preset and
the digest of the code that made them; chapter 10 reads the file and checks that its own first runs
reproduce the file's first rows.

    .venv/bin/python benchmarks/aa_calibration.py [--preset book] [--runs 200] [--share 0.25] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

from retrieval_lib.infra.cache import source_digest
from retrieval_lib.marketplace import generate
from retrieval_lib.simulation.abtest import CALIBRATION_MODULES, AACalibration, aa_calibration

#: Bootstrap replicates per A/A interval (the chapter's A/B test uses 2,000; 1,000 keeps 200 tests quick).
N_BOOT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="book")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--out", default="book/data/aa_calibration.json")
    args = parser.parse_args()
    start = time.perf_counter()
    world = generate(args.preset, seed=0, cache=True)
    runs = aa_calibration(world, runs=args.runs, share=args.share, n_boot=N_BOOT)
    command = (f"benchmarks/aa_calibration.py --preset {args.preset} --runs {args.runs} --share {args.share} "
               f"--out {args.out}")
    calibration = AACalibration(command, args.preset, args.share, N_BOOT, source_digest(CALIBRATION_MODULES), runs)
    calibration.save(args.out)
    print(f"{args.runs} A/A tests: {calibration.coverage:.1%} of the intervals cover 0; wrote {args.out} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
