"""Execute every chapter and build the HTML book strictly (what `make book` runs).

The chapters run two at a time where they do not wait on each other's artifacts (:data:`NEEDS`), each
kernel on one thread, and a chapter that measures latency runs alone (:data:`ALONE`). The executed
notebooks go into a fresh Jupyter cache that Jupyter Book then reads instead of executing again, so a
build always runs every chapter: the artifact cache (``.cache/``), not the notebook cache, is what makes
a second build fast. Each chapter records its figures into a file of its own; they are merged, in
chapter order, into book/_build/results.json. Set RETRIEVAL_LIB_PRESET=tiny for a quick smoke build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from retrieval_lib.infra import results

ROOT = Path(__file__).resolve().parents[1]

BUILD = ROOT / "book" / "_build"
#: Where the executed notebooks wait for Jupyter Book (``execute.cache`` in book/_config.yml).
NOTEBOOK_CACHE = BUILD / ".jupyter_cache"
#: Chapters that must have finished before a chapter starts, because it loads what they trained (chapter 1
#: generates the world everything reads). Chapters listed nowhere run as soon as a slot is free.
NEEDS: dict[str, tuple[str, ...]] = {
    "02_semantic_gap": ("01_marketplace",),
    "03_graph_embeddings": ("01_marketplace",),
    "04_term_embeddings": ("01_marketplace",),
    "05_transformer_pretraining": ("01_marketplace",),
    "06_unified_model": ("03_graph_embeddings", "05_transformer_pretraining"),
    "07_hard_negatives": ("06_unified_model",),
    "08_hinge_loss": ("07_hard_negatives",),
    "09_ann_boosting": ("07_hard_negatives",),
    "10_whole_system": ("07_hard_negatives",),
}
#: Chapters whose figures include latency under load: nothing else runs beside them.
ALONE = {"10_whole_system"}
#: Chapters that run at once (the book's machines have two cores; every kernel uses one thread).
SLOTS = 2
#: The slowest chapters first when several are ready, so that the short ones fill the gaps.
FIRST = ("05_transformer_pretraining", "06_unified_model", "08_hinge_loss", "03_graph_embeddings")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TIMEOUT = 900  # seconds per cell, as execute.timeout in book/_config.yml


def chapters() -> list[Path]:
    """The notebooks of the book, in chapter order."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, results_file: Path) -> tuple[nbformat.NotebookNode, float, str | None]:
    """Execute one chapter in its own kernel; return the notebook, the seconds and the error (if any)."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, **ONE_THREAD, "RETRIEVAL_LIB_RESULTS": str(results_file), "TQDM_DISABLE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)
        error = None
    except CellExecutionError as err:
        error = str(err)
    except Exception as err:  # noqa: BLE001 - a dead kernel or a timeout fails the chapter, not the runner
        error = f"{type(err).__name__}: {err}"
    return nb, time.perf_counter() - start, error


def run_chapters(paths: list[Path], results_dir: Path) -> dict[str, tuple[nbformat.NotebookNode, float]]:
    """Run the chapters, up to :data:`SLOTS` at a time as :data:`NEEDS` and :data:`ALONE` allow.

    Raises ``RuntimeError`` naming the first chapter that failed (after the running ones finish).
    """
    names = [p.stem for p in paths]
    by_name = dict(zip(names, paths, strict=True))
    order = sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))
    done: dict[str, tuple[nbformat.NotebookNode, float]] = {}
    running: set[str] = set()
    failed: list[str] = []
    lock = threading.Condition()

    def work(name: str) -> None:
        nb, seconds, error = execute(by_name[name], results_dir / f"{name}.json")
        with lock:
            running.discard(name)
            if error is None:
                done[name] = (nb, seconds)
                print(f"{name}: executed in {seconds:.0f} s", flush=True)
            else:
                failed.append(name)
                print(f"{name}: failed after {seconds:.0f} s\n{error}", file=sys.stderr, flush=True)
            lock.notify_all()

    def ready(name: str) -> bool:
        if any(n in ALONE for n in running) or (name in ALONE and running):
            return False
        return all(need in done or need not in by_name for need in NEEDS.get(name, ()))

    waiting = list(order)
    with lock:
        while waiting or running:
            startable = [] if failed else [n for n in waiting if ready(n)]
            if failed and not running:
                break
            while startable and len(running) < SLOTS:
                name = startable.pop(0)
                waiting.remove(name)
                running.add(name)
                threading.Thread(target=work, args=(name,), daemon=True).start()
                startable = [n for n in startable if ready(n)]
            if not running and waiting and not failed:
                raise RuntimeError(f"chapters {waiting} wait on chapters that are not in the book")
            lock.wait()
    if failed:
        raise RuntimeError(f"chapter {failed[0]} failed to execute")
    return done


def main() -> int:
    """Build the book; return the process exit code."""
    BUILD.mkdir(parents=True, exist_ok=True)
    results_file = BUILD / "results.json"
    results_dir = BUILD / "chapter_results"
    results_file.unlink(missing_ok=True)
    shutil.rmtree(results_dir, ignore_errors=True)
    shutil.rmtree(NOTEBOOK_CACHE, ignore_errors=True)
    results_dir.mkdir(parents=True)
    paths = chapters()
    start = time.perf_counter()
    try:
        executed = run_chapters(paths, results_dir)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"chapters executed in {time.perf_counter() - start:.0f} s", flush=True)
    results.merge([results_dir / f"{p.stem}.json" for p in paths], results_file)
    cache = get_cache(str(NOTEBOOK_CACHE))
    for path in paths:
        nb, seconds = executed[path.stem]
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                    check_validity=False, overwrite=True)
        try:  # what Jupyter Book will look up: a miss would make it execute the chapter a second time
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            print(f"error: the executed {path.name} does not match its source in the notebook cache",
                  file=sys.stderr)
            return 1
    env = {**os.environ, "RETRIEVAL_LIB_RESULTS": str(results_file), "TQDM_DISABLE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
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
