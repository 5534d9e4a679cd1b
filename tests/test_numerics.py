"""Pinned numerics: every entry point runs torch, NumPy and friends on their AVX2 code paths, and the pins matter."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager

from retrieval_lib.infra import chapters, numerics

#: Reports what a fresh process runs on: torch's capability and whether retrieval_lib calls it pinned.
REPORT = "import json; from retrieval_lib.infra import numerics; import torch; " \
         "print(json.dumps([torch.backends.cpu.get_cpu_capability(), numerics.pinned()]))"

#: A small two-tower training (EmbeddingBag, MLP, in-batch softmax, Adam); prints a hash of its weights.
TRAIN = """
import retrieval_lib, hashlib, torch
torch.manual_seed(0)
emb = torch.nn.EmbeddingBag(3000, 32, mode="mean")
mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
params = [*emb.parameters(), *mlp.parameters()]
opt = torch.optim.Adam(params, lr=1e-2)
g = torch.Generator().manual_seed(0)
for _ in range(100):
    q, d = (torch.randint(0, 3000, (64, 6), generator=g) for _ in range(2))
    a, b = (torch.nn.functional.normalize(mlp(emb(x)), dim=-1) for x in (q, d))
    loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(64))
    opt.zero_grad(); loss.backward(); opt.step()
print(hashlib.sha1(torch.cat([p.detach().flatten() for p in params]).numpy().tobytes()).hexdigest())
"""

CPU_FLAGS = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
HAS_AVX2, HAS_AVX512 = " avx2" in CPU_FLAGS, " avx512f" in CPU_FLAGS
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="the pins choose AVX2 code paths, which this CPU lacks")


def _unpinned_env(**extra: str) -> dict[str, str]:
    """This process's environment without any pinned variable (as on a machine where nothing is set)."""
    return {**{k: v for k, v in os.environ.items() if k not in numerics.PINNED_ENV}, **extra}


def _run(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


@needs_avx2
def test_the_test_process_itself_is_pinned():
    """pyproject's ``-p retrieval_lib.infra.numerics`` pins pytest before conftest imports torch."""
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert numerics.pinned()
    assert all(os.environ[name] == value for name, value in numerics.PINNED_ENV.items() if name != "OMP_NUM_THREADS")


@needs_avx2
def test_importing_retrieval_lib_first_pins_a_fresh_process():
    assert json.loads(_run(REPORT, _unpinned_env())) == ["AVX2", True]


@needs_avx2
def test_a_variable_already_set_wins_and_the_opt_out_turns_every_pin_off():
    assert json.loads(_run(REPORT, _unpinned_env(ATEN_CPU_CAPABILITY="default"))) == ["DEFAULT", False]
    code = "import os, retrieval_lib.infra.numerics as n; print(sorted(k for k in n.PINNED_ENV if k in os.environ))"
    assert _run(code, _unpinned_env(**{numerics.UNPINNED_ENV: "1"})) == "[]"


@needs_avx2
def test_importing_torch_first_warns_that_the_figures_may_differ():
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import torch, retrieval_lib"],
                          env=_unpinned_env(), capture_output=True, text=True, timeout=300)
    # on a CPU without AVX-512, AVX2 is torch's own choice and nothing needs saying
    assert ("imported before retrieval_lib" in proc.stderr) == HAS_AVX512, proc.stderr[-2000:]


@needs_avx2
def test_the_pins_change_a_training_run_and_repeat_it_exactly():
    """What the canary relies on: pinned runs repeat bit for bit; torch's default kernels give other weights."""
    pinned = [_run(TRAIN, _unpinned_env()) for _ in range(2)]
    assert pinned[0] == pinned[1]
    assert _run(TRAIN, _unpinned_env(ATEN_CPU_CAPABILITY="default")) != pinned[0]


def test_the_book_kernel_pins_before_a_notebook_imports_anything():
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[spec.argv.index("-m") + 1] == "retrieval_lib.infra.kernel", spec.argv
    assert spec.display_name == "Python 3 (retrieval_lib)"


@needs_avx2
def test_a_notebook_on_the_book_kernel_runs_pinned_although_it_imports_numpy_and_torch_first():
    code = ("import nbformat; from nbclient import NotebookClient\n"
            "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("
            "'import numpy, torch\\nfrom retrieval_lib.infra import numerics\\nprint(numerics.pinned())')])\n"
            "NotebookClient(nb, kernel_name='python3', timeout=120).execute()\n"
            "print(nb.cells[0].outputs[0]['text'].strip())")
    assert _run(code, _unpinned_env()).splitlines()[-1] == "True"


def test_describe_names_every_pinned_variable():
    described = numerics.describe()
    assert set(numerics.PINNED_ENV) <= set(described)
    assert described["torch.cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_differences_are_readable_largest_first_with_missing_keys():
    reference = {"a.x": 0.5, "b.y": 1.0, "c.z": 3, "gone.k": 2.0}
    run = {"a.x": 0.5, "b.y": 1.25, "c.z": 4, "new.k": 1.0}
    lines = chapters.differences(reference, run)
    assert lines[0].startswith("gone.k") or lines[0].startswith("new.k")  # missing: the largest change
    assert [line.split(":")[0] for line in lines[2:]] == ["c.z", "b.y"]
    assert "reference 1.0, this run 1.25 (change +0.25)" in lines[-1]
    assert chapters.differences(reference, reference) == []
    assert chapters.differences({f"k.{i}": 0 for i in range(30)}, {}, limit=5)[-1] == "... and 25 more"


def test_the_committed_reference_names_its_command_and_holds_deterministic_figures_only():
    body = json.loads(chapters.REFERENCE.read_text())
    assert body["command"] == chapters.REGENERATE
    figures = body["figures"]
    assert len(figures) > 100 and figures["_meta"]["preset"] == "tiny"
    assert not [k for k in figures if k.endswith(("_seconds", "_ms", "qps", "ms_per_query"))]
    assert body["made_on"]["cpu"] != "unknown"  # the vendor decides MKL's code path
    # the figures another CPU vendor must repeat: a real share, among them the world's and BM25's
    free = body["vendor_free"]
    assert set(free) <= set(figures) and len(free) > 300
    assert any(k.startswith("marketplace.") for k in free) and any(k.startswith("bm25.") for k in free)


def test_canary_figures_are_all_on_the_references_cpu_and_the_vendor_free_ones_elsewhere(tmp_path, monkeypatch):
    path = tmp_path / "reference.json"
    chapters.write_reference({"a.x": 1.0, "b.y": 2, "c.train_seconds": 3.0, "_meta": {"preset": "tiny"}}, path,
                             ["a.x"])
    figures, every = chapters.canary_figures(path)
    assert every and figures == {"a.x": 1.0, "b.y": 2, "_meta": {"preset": "tiny"}}  # timings left out
    monkeypatch.setattr(numerics, "cpu", lambda: "AuthenticAMD AMD EPYC 9R14 (a test)")
    assert chapters.canary_figures(path) == ({"a.x": 1.0}, False)
    with pytest.raises(ValueError, match="vendor-free keys"):
        chapters.write_reference({"a.x": 1.0}, path, ["z.z"])


def test_cpu_name_reads_vendor_and_model():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 9R14\n"
    assert numerics.cpu_name(text) == "AuthenticAMD AMD EPYC 9R14"
    assert numerics.cpu_name("") == "unknown"
    assert numerics.describe()["cpu"] == numerics.cpu() != "unknown"  # part of every artifact's cache key


NUMERIC = {"numpy", "torch", "pandas", "scipy", "sklearn", "faiss", "hnswlib", "lightgbm", "sentence_transformers"}
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _unpinned_numeric_import(source: str) -> str | None:
    """The first numeric library a script imports at module level before ``retrieval_lib`` (directly or
    through the benchmarks' ``common``), or ``None``: NumPy reads the pins only once, when it loads."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        roots = {name.split(".")[0] for name in names}
        if roots & {"retrieval_lib", "common"}:
            return None
        if roots & NUMERIC:
            return sorted(roots & NUMERIC)[0]
    return None


def test_benchmark_scripts_import_retrieval_lib_before_numpy_and_torch():
    scripts = sorted(BENCHMARKS.rglob("*.py"))
    assert len(scripts) > 10
    common = (BENCHMARKS / "common.py").read_text()
    assert _unpinned_numeric_import(common) is None and "from retrieval_lib" in common
    late = {p.name: lib for p in scripts if (lib := _unpinned_numeric_import(p.read_text()))}
    assert not late, f"benchmark scripts that load a numeric library before retrieval_lib pins it: {late}"


@pytest.mark.parametrize("source, late", [
    ("import numpy as np\nfrom common import x\n", "numpy"),
    ("import json\nimport torch\nimport retrieval_lib\n", "torch"),
    ("from pandas import DataFrame\n", "pandas"),
    ("from common import x\nimport numpy as np\n", None),
    ("import retrieval_lib\nimport torch\n", None),
    ("from retrieval_lib.infra import numerics\nimport numpy\n", None),
])
def test_the_import_order_check_would_catch_an_early_numpy(source, late):
    assert _unpinned_numeric_import(source) == late


@pytest.mark.parametrize("features, pinned", [
    ({"AVX2": True, "AVX512F": False, "AVX512_ICL": False, "AVX512_SPR": True}, True),  # SPR: no kernels for it
    ({"AVX2": True, "AVX512F": False, "AVX512_ICL": True}, False),
    ({"AVX2": True, "AVX512F": True, "AVX512_ICL": False}, False),
    ({"AVX2": True}, True),
])
def test_numpy_counts_only_the_targets_it_has_kernels_for(monkeypatch, features, pinned):
    """An Intel Sapphire Rapids CPU reports ``AVX512_SPR`` enabled whatever the pins say; NumPy 1.26 has no
    kernels for it, so it must not make ``pinned()`` False."""
    import numpy.core._multiarray_umath as umath

    monkeypatch.setattr(umath, "__cpu_dispatch__", ["SSE42", "AVX2", "AVX512F", "AVX512_ICL"])
    monkeypatch.setattr(umath, "__cpu_features__", features)
    assert numerics._numpy_pinned() is pinned
