"""What each numeric pin changes and what it costs: one fixed workload, each pin alone, all and none.

    .venv/bin/python benchmarks/numerics_pins.py [--repeats 3] [--out benchmarks/results/numerics_pins.json]

Each configuration runs in a fresh process (the libraries read their variables when they load), starting
from no pin at all (``RETRIEVAL_LIB_UNPINNED=1``) and adding one variable, or all of them. The workload
stands in for the book's work: a two-tower training step loop (EmbeddingBag, a transformer layer and an
MLP, in-batch softmax, Adam: torch's kernels and MKL's matrix products), NumPy's ufuncs and argsort with
ties (the evaluation's tie order), and Faiss's exact and 4-bit PQ search. For each part it reports the
seconds (median of the repeats) and a hash of the result, so the table shows which pin moves which
numbers and at what speed. Run it with nothing else running.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from retrieval_lib.infra.numerics import PINNED_ENV, UNPINNED_ENV

WORKLOAD = r"""
import hashlib, json, sys, time
import numpy as np
import torch
import faiss

def h(a):
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:10]

out = {}
t = time.perf_counter()
torch.manual_seed(0)
emb = torch.nn.EmbeddingBag(2**16, 64, mode="mean")
layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
params = [*emb.parameters(), *layer.parameters(), *mlp.parameters()]
opt = torch.optim.Adam(params, lr=3e-3)
g = torch.Generator().manual_seed(0)
for _ in range(60):
    q = torch.randint(0, 2**16, (512, 8), generator=g)
    d = torch.randint(0, 2**16, (512, 8, 12), generator=g)
    a = torch.nn.functional.normalize(mlp(emb(q)), dim=-1)
    b = torch.nn.functional.normalize(mlp(layer(emb(d.view(-1, 12)).view(512, 8, 64)).mean(1)), dim=-1)
    loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(512))
    opt.zero_grad(); loss.backward(); opt.step()
out["torch_training"] = (time.perf_counter() - t, h(torch.cat([p.detach().flatten() for p in params]).numpy()))

rng = np.random.default_rng(0)
x = rng.standard_normal(5_000_000)
ties = rng.integers(0, 100, 2_000_000)
t = time.perf_counter()
r = np.exp(x) + np.log1p(np.abs(x))
order = np.argsort(-ties)
out["numpy_ufuncs_argsort"] = (time.perf_counter() - t, h(r) + "/" + h(order))

xb = rng.standard_normal((20_000, 64)).astype("float32")
xq = rng.standard_normal((2_000, 64)).astype("float32")
t = time.perf_counter()
flat = faiss.IndexFlatIP(64); flat.add(xb); D, _ = flat.search(xq, 100)
pq = faiss.index_factory(64, "IVF128,PQ32x4fs", faiss.METRIC_INNER_PRODUCT); pq.train(xb); pq.add(xb)
pq.nprobe = 16; _, I = pq.search(xq, 100)
out["faiss_search"] = (time.perf_counter() - t, h(D) + "/" + h(I))
out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
print(json.dumps(out))
"""


def run(env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/numerics_pins.json"))
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in PINNED_ENV} | {UNPINNED_ENV: "1"}
    configs = {"none": {}, **{name: {name: value} for name, value in PINNED_ENV.items()}, "all": dict(PINNED_ENV)}
    rows = {}
    for label, pins in configs.items():
        runs = [run(base | pins) for _ in range(args.repeats)]
        row = {"cpu_capability": runs[0]["torch_cpu_capability"]}
        for part in ("torch_training", "numpy_ufuncs_argsort", "faiss_search"):
            seconds = sorted(r[part][0] for r in runs)
            row[part] = {"seconds": seconds[len(seconds) // 2], "hash": runs[0][part][1],
                         "repeats_identical": len({r[part][1] for r in runs}) == 1}
        rows[label] = row
        print(label, json.dumps(row), flush=True)
    print("\n| configuration | torch s | hash | numpy s | hash | faiss s | hash |\n|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        cells = [f"{row[p]['seconds']:.2f} | {row[p]['hash']}" for p in ("torch_training", "numpy_ufuncs_argsort",
                                                                       "faiss_search")]
        print(f"| {label} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
