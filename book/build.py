"""Execute every chapter and build the HTML book strictly (what `make book` runs).

The book's expensive models are trained first, by the jobs of :mod:`retrieval_lib.prefetch`, each in a
process of its own; the chapters then load them from the artifact cache. Jobs and chapters run two at
a time where they do not wait on each other's artifacts (:data:`NEEDS`), so that both cores stay busy,
and a chapter that measures latency runs alone (:data:`ALONE`). Every kernel keeps the thread count it has
when it runs alone (the thread count is part of the numerics: two at a time changes no figure, only
how long each takes). The executed notebooks go into a fresh Jupyter cache that Jupyter Book then
reads instead of executing them again, so a build always runs every chapter: the artifact cache
(``.cache/``), not the notebook cache, is what makes a second build fast. Each chapter records its
figures into a file of its own; they are merged, in chapter order, into book/_build/results.json.
Set RETRIEVAL_LIB_PRESET=tiny for a quick smoke build and RETRIEVAL_LIB_BUILD_SLOTS=1 to run the
chapters one after another. Importing retrieval_lib pins the numeric code paths in this process's
environment, which every chapter's kernel inherits (and pins again itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from retrieval_lib.infra import numerics, results
from retrieval_lib.infra.chapters import run_scheduled
from retrieval_lib.prefetch import JOBS

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "book" / "_build"
#: Where the executed notebooks wait for Jupyter Book (its default ``execute.cache`` for this build).
NOTEBOOK_CACHE = BUILD / ".jupyter_cache"
#: What must have finished before a chapter starts, because it loads an artifact made there: chapter 1
#: generates the world, 3 the graph, 4 the term model, and the build's jobs (:data:`JOBS`) train the
#: models chapters 5-10 load. A chapter that started early would not fail: it would train the same
#: artifact again, identically, and waste the time.
NEEDS: dict[str, tuple[str, ...]] = {
    "02_semantic_gap": ("01_marketplace",),
    "03_graph_embeddings": ("01_marketplace",),
    "04_term_embeddings": ("01_marketplace",),
    "05_transformer_pretraining": ("03_graph_embeddings", "04_term_embeddings", "doc2query", "sentence_vectors",
                                   "unified", "pretrained_block"),
    "06_unified_model": ("03_graph_embeddings", "unified", "ablations_1", "ablations_2"),
    "07_hard_negatives": ("03_graph_embeddings", "unified", "uniform", "mined"),
    "08_hinge_loss": ("03_graph_embeddings", "uniform", "losses"),
    "09_ann_boosting": ("uniform",),
    "10_whole_system": ("uniform", "system"),
    **{name: job.needs for name, job in JOBS.items()},
}
#: Chapters whose figures include latencies or timing ratios that claims tests bound: nothing runs
#: beside them (so they run last, once everything else has finished).
ALONE = ("09_ann_boosting", "10_whole_system")
#: When several steps are ready, these start first, in this order: the pre-training every model waits
#: on, then the long trainings, so that the chapters (mostly loading and evaluating) fill the gaps.
FIRST = ("doc2query", "03_graph_embeddings", "sentence_vectors", "04_term_embeddings", "unified",
         "pretrained_block", "05_transformer_pretraining", "uniform", "mined", "ablations_1", "losses",
         "ablations_2", "system")
#: Chapters that run beside another step: their kernels' OpenMP threads sleep while they wait
#: (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning. Two spinning two-thread trainings on two cores
#: took 4.2 times as long each as one alone; sleeping ones 1.4 times (one alone: 1.3 times), and the
#: weights are bit for bit the same. The jobs always sleep; chapters that run alone keep spinning,
#: which is faster alone.
PASSIVE = ("02_semantic_gap", "03_graph_embeddings", "04_term_embeddings", "05_transformer_pretraining",
           "06_unified_model", "07_hard_negatives", "08_hinge_loss")
#: How many chapters run at once (the book's machines have two cores).
SLOTS_ENV = "RETRIEVAL_LIB_BUILD_SLOTS"
TIMEOUT = 900  # seconds per cell, as execute.timeout in book/_config.yml


def chapters() -> list[Path]:
    """The notebooks of the book (the preface included), in chapter order."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def build_env(results_file: Path, passive: bool = False) -> dict[str, str]:
    """The environment of a chapter's kernel or of Jupyter Book: its results file and no progress bars.

    With ``passive``, OpenMP threads sleep while they wait (unless the caller set a policy).
    """
    env = {**os.environ, "RETRIEVAL_LIB_RESULTS": str(results_file), "TQDM_DISABLE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if passive and "OMP_WAIT_POLICY" not in os.environ:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def execute(path: Path, results_file: Path) -> tuple[nbformat.NotebookNode, float, str | None]:
    """Execute one chapter in its own kernel; return the notebook, the seconds and the error (if any)."""
    nb = nbformat.read(path, as_version=4)
    env = build_env(results_file, passive=path.stem in PASSIVE)
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
        error = None
    except CellExecutionError as err:
        error = str(err)
    except Exception as err:  # noqa: BLE001 - a dead kernel or a timeout fails the chapter, not the build
        error = f"{type(err).__name__}: {err}"
    return nb, time.perf_counter() - start, error


def prefetch_job(name: str, log: Path) -> tuple[float, str | None]:
    """Run one of :data:`JOBS` in a process of its own (sleeping OpenMP threads); return the seconds and the error.

    The job's output goes to ``log``; an error names the log's last lines.
    """
    env = build_env(log.with_suffix(".json"), passive=True)
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, "-m", "retrieval_lib.prefetch", name], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
    error = None if code == 0 else f"exit code {code}:\n{''.join(log.read_text().splitlines(True)[-20:])}"
    return time.perf_counter() - start, error


def say(line: str) -> None:
    """Print one whole line (chapters finish on several threads)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    """Build the book; return the process exit code."""
    BUILD.mkdir(parents=True, exist_ok=True)
    results_file = BUILD / "results.json"
    results_dir = BUILD / "chapter_results"
    results_file.unlink(missing_ok=True)
    shutil.rmtree(results_dir, ignore_errors=True)
    shutil.rmtree(NOTEBOOK_CACHE, ignore_errors=True)
    results_dir.mkdir(parents=True)
    slots = int(os.environ.get(SLOTS_ENV, "2"))
    paths = {p.stem: p for p in chapters()}
    executed: dict[str, tuple[nbformat.NotebookNode, float]] = {}
    print(f"numeric code paths: {numerics.describe()} (pinned: {numerics.pinned()}); {slots} chapters at a time",
          flush=True)
    start = time.perf_counter()

    def work(name: str) -> str | None:
        say(f"{name}: started at {time.perf_counter() - start:.0f} s")
        if name in JOBS:
            seconds, error = prefetch_job(name, results_dir / f"job-{name}.log")
            if error is None:
                say(f"{name}: trained in {seconds:.0f} s")
            return error
        nb, seconds, error = execute(paths[name], results_dir / f"{name}.json")
        if error is None:
            executed[name] = (nb, seconds)
            say(f"{name}: executed in {seconds:.0f} s")
        return error

    try:
        run_scheduled([*paths, *JOBS], work, NEEDS, alone=ALONE, slots=slots, first=FIRST)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"chapters executed in {time.perf_counter() - start:.0f} s", flush=True)
    results.merge([results_dir / f"{name}.json" for name in paths], results_file)
    cache = get_cache(str(NOTEBOOK_CACHE))
    for name, path in paths.items():
        nb, seconds = executed[name]
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                    check_validity=False, overwrite=True)
        try:  # what Jupyter Book will look up: a miss would make it execute the chapter a second time
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            print(f"error: the executed {path.name} does not match its source in the notebook cache",
                  file=sys.stderr)
            return 1
    env = build_env(results_file)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "--config", "book/_config.yml",
           "--toc", "book/_toc.yml", "--path-output", "book", "--all", "-W", "--keep-going"]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"book build finished in {time.perf_counter() - start:.0f} s with exit code {code}")
    if code == 0 and not (BUILD / "html" / "index.html").is_file():
        print("error: book/_build/html/index.html was not written", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
