"""Run the book's chapters headlessly on a preset, and compare their figures with a committed reference.

The tests run every chapter on the ``tiny`` world twice (same seed: identical figures) and compare the
figures with ``tests/data/tiny_reference.json``, made on the pinned code paths
(:mod:`retrieval_lib.infra.numerics`). A machine whose CPU differs from the one that made the
reference then proves or disproves the pins: a cross-machine canary. Regenerate the reference after an
intended change with ``.venv/bin/python benchmarks/tiny_reference.py``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval_lib.infra import results

if TYPE_CHECKING:
    from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[2]
#: The committed figures of a tiny run (deterministic keys only) and the command that regenerates them.
REFERENCE = ROOT / "tests" / "data" / "tiny_reference.json"
REGENERATE = ".venv/bin/python benchmarks/tiny_reference.py"

# A glue role in markdown, with or without a format or a notebook path; the group is the key. Private,
# so that the API page does not print the pattern (the browser check would read it as unresolved glue).
_GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`(?:[^`:]*::)?([^`:]+)")

# An exercise's collapsed parts (MyST colon fences, which JupyterLab shows as plain text) and the Python
# blocks of a worked solution.
_EXERCISE = re.compile(r"^(\d+)\. ", re.M)
_DROPDOWN = re.compile(r"^:::\{dropdown\} (Hint|Solution)\n(.*?)^:::$", re.M | re.S)
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)

#: One thread per run: two runs go side by side on two cores, and the thread count is part of the numerics.
SINGLE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

#: Executes the notebooks named on its command line in order, in one process (the env sets the preset);
#: each notebook's kernel logs its glues to ``<glue_logs(results file)>/<notebook stem>.tsv``.
_RUN = """
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from retrieval_lib.infra.chapters import with_solutions

logs = Path(os.environ["RETRIEVAL_LIB_GLUE_LOGS"])
logs.mkdir(parents=True, exist_ok=True)
solutions = os.environ.get("RETRIEVAL_LIB_SOLUTIONS") == "1"
for name in sys.argv[1:]:
    path = Path(name)
    os.environ["GLUE_LOG_ENV"] = str(logs / f"{path.stem}.tsv")
    nb = nbformat.read(path, as_version=4)
    if solutions:
        nb, added = with_solutions(nb)
        print(f"{path.name}: {added} solution cells", flush=True)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
""".replace("GLUE_LOG_ENV", results.GLUE_LOG_ENV)


@dataclass(frozen=True)
class Exercise:
    """One numbered exercise of a chapter, with its collapsed hint and worked solution (empty when missing)."""

    number: int
    text: str
    hint: str
    solution: str

    @property
    def code(self) -> list[str]:
        """The solution's Python blocks, in order: the code a reader runs after the chapter."""
        return [block.rstrip() + "\n" for block in _PYTHON_BLOCK.findall(self.solution)]


def exercises(nb: Path | NotebookNode) -> list[Exercise]:
    """The numbered exercises under ``## Exercises`` in a notebook (a path or an ``nbformat`` node).

    Each exercise is a numbered item followed by ``:::{dropdown} Hint`` and ``:::{dropdown} Solution``
    blocks (collapsed in the HTML book, plain text in JupyterLab); Python blocks in the solution are
    run after the chapter by :func:`with_solutions`.
    """
    import nbformat

    if not hasattr(nb, "cells"):
        nb = nbformat.read(nb, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if "## Exercises" not in text:
        return []
    section = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    starts = list(_EXERCISE.finditer(section))
    found = []
    for i, start in enumerate(starts):
        body = section[start.end():starts[i + 1].start() if i + 1 < len(starts) else len(section)]
        parts = {kind: content.strip() for kind, content in _DROPDOWN.findall(body)}
        first = _DROPDOWN.search(body)
        found.append(Exercise(int(start.group(1)), body[:first.start() if first else len(body)].strip(),
                              parts.get("Hint", ""), parts.get("Solution", "")))
    return found


def with_solutions(nb: NotebookNode) -> tuple[NotebookNode, int]:
    """A copy of ``nb`` with every exercise's solution code appended as code cells tagged ``solution``.

    The code runs in the chapter's kernel after its last cell, as a reader runs it; returns the copy and
    the number of cells added.
    """
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    added = 0
    for exercise in exercises(nb):
        for code in exercise.code:
            cell = nbformat.v4.new_code_cell(code)
            cell.metadata["tags"] = ["solution"]
            nb.cells.append(cell)
            added += 1
    return nb, added


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapters' notebooks in order (the preface records nothing a chapter needs)."""
    return [p for p in sorted((root / "notebooks").glob("*.ipynb")) if not p.name.startswith("00_")]


def start_run(paths: Sequence[Path], results_file: Path, cache: Path, preset: str = "tiny",
              solutions: bool = False, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Execute ``paths`` in order on ``preset`` with the artifact cache at ``cache``, one thread, in a new process.

    The figures land in ``results_file``; the process's output (stdout and stderr) is piped as text. With
    ``solutions``, each chapter's exercise solutions run after its last cell (:func:`with_solutions`).
    ``env`` sets further environment variables (e.g. another MKL code path).
    """
    env = {**os.environ, **(env or {}), **SINGLE_THREAD, "RETRIEVAL_LIB_PRESET": preset,
           "RETRIEVAL_LIB_RESULTS": str(results_file),
           "RETRIEVAL_LIB_CACHE": str(cache), "TQDM_DISABLE": "1",
           "RETRIEVAL_LIB_GLUE_LOGS": str(glue_logs(results_file)), "RETRIEVAL_LIB_SOLUTIONS": str(int(solutions))}
    return subprocess.Popen([sys.executable, "-c", _RUN, *map(str, paths)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_scheduled(names: Sequence[str], work: Callable[[str], str | None], needs: Mapping[str, Sequence[str]],
                  alone: Collection[str] = (), slots: int = 2, first: Sequence[str] = ()) -> list[str]:
    """Run ``work(name)`` for every name, up to ``slots`` at a time; return the names in the order they finished.

    A name starts once every name ``needs[name]`` lists (among ``names``) has finished without error;
    a name in ``alone`` runs with nothing beside it (a chapter that measures latency). When several
    could start, those in ``first`` go first (the longest chapters, so the short ones fill the gaps),
    then the others in the order given. ``work`` returns ``None`` on success or an error message; after
    the first error nothing new starts, the running ones finish, and ``RuntimeError`` names the failure.
    """
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    waiting = sorted(names, key=lambda n: (first.index(n) if n in first else len(first), list(names).index(n)))
    finished: list[str] = []
    running: set[str] = set()
    errors: dict[str, str] = {}
    lock = threading.Condition()

    def run(name: str) -> None:
        try:
            error = work(name)
        except Exception as err:  # noqa: BLE001 - a crashed worker fails its chapter, not the scheduler
            error = f"{type(err).__name__}: {err}"
        with lock:
            running.discard(name)
            if error is None:
                finished.append(name)
            else:
                errors[name] = error
            lock.notify_all()

    def ready(name: str) -> bool:
        if any(n in alone for n in running) or (name in alone and running):
            return False
        return all(need in finished for need in needs.get(name, ()) if need in names)

    with lock:
        while (waiting and not errors) or running:
            for name in list(waiting):
                if not errors and len(running) < slots and ready(name):
                    waiting.remove(name)
                    running.add(name)
                    threading.Thread(target=run, args=(name,), daemon=True).start()
            if not running:
                if waiting and not errors:
                    raise RuntimeError(f"{waiting} wait on each other or on names that never finish "
                                       f"(needs: { {n: list(needs.get(n, ())) for n in waiting} })")
                break
            lock.wait()
    if errors:
        name = next(iter(errors))
        raise RuntimeError(f"{name} failed: {errors[name]}")
    return finished


def glue_logs(results_file: Path) -> Path:
    """The folder where :func:`start_run` logs which cell glued each figure, one file per notebook."""
    return results_file.with_name(results_file.stem + "-glue")


def glued_before_quoted(path: Path, glued: dict[str, int]) -> list[str]:
    """Glue roles in ``path``'s markdown that quote a figure no earlier code cell glued.

    ``glued`` maps each key to the number ``n`` (``In[n]``) of the cell that glued it
    (:func:`results.glue_log`); code cells with source run in order, so the n-th of them is ``In[n]``.
    Keys the run never glued (a figure only the ``book`` preset records, say) are left to the strict
    book build.
    """
    import nbformat

    late = []
    executed = 0
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and cell.source.strip():
            executed += 1
        elif cell.cell_type == "markdown":
            for key in _GLUE_ROLE.findall(cell.source):
                if key in glued and glued[key] > executed:
                    late.append(f"{path.name}: markdown after code cell {executed} quotes {key!r}, glued in "
                                f"code cell {glued[key]}")
    return late


def differences(expected: dict[str, object], actual: dict[str, object], limit: int = 25) -> list[str]:
    """Readable lines for every key whose value differs (missing keys included), the largest changes first."""
    rows = []
    for key in sorted(expected.keys() | actual.keys()):
        a, b = expected.get(key), actual.get(key)
        if a == b:
            continue
        both = isinstance(a, int | float) and isinstance(b, int | float)
        change = abs(b - a) if both and math.isfinite(b - a) else math.inf
        rows.append((change, f"{key}: reference {a!r}, this run {b!r}" + (f" (change {b - a:+.6g})" if both else "")))
    rows.sort(key=lambda r: -r[0])
    lines = [text for _, text in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more")
    return lines


def load_reference(path: Path = REFERENCE) -> dict[str, object]:
    """The committed reference figures (with their ``_meta`` world tag), without the file's command and machine."""
    data = json.loads(path.read_text())
    return data["figures"]


def write_reference(figures: dict[str, object], path: Path = REFERENCE, vendor_free: Sequence[str] = ()) -> None:
    """Write ``figures`` (a tiny run's results) as the reference, its deterministic keys only.

    ``vendor_free`` names the figures that do not depend on MKL's code path (:func:`canary_figures`).
    """
    from retrieval_lib.infra import numerics

    figures = results.deterministic(figures)
    unknown = sorted(set(vendor_free) - set(figures))
    if unknown:
        raise ValueError(f"vendor-free keys that the figures lack: {unknown[:5]}")
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    made_on = {**numerics.describe(), **SINGLE_THREAD, "torch.threads": "1", "machine": platform.machine(),
               "avx512f": str(" avx512f" in text)}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"command": REGENERATE, "made_on": made_on, "figures": figures, "vendor_free": sorted(vendor_free)}
    path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


def canary_figures(path: Path = REFERENCE) -> tuple[dict[str, object], bool]:
    """The reference figures a tiny run on this machine must repeat, and whether that is all of them.

    On the kind of CPU the reference was made on (its vendor and model), every figure. On another,
    MKL takes another code path and every trained model ends with other last digits (the pins fix
    the branch on Intel CPUs only), so only the figures the reference found the same under two MKL
    code paths (``vendor_free``: the world, the lexical baselines, the committed studies' statistics,
    ...) must repeat; the rest differ, as the book's prose allows.
    """
    from retrieval_lib.infra import numerics

    body = json.loads(path.read_text())
    figures = body["figures"]
    if body["made_on"].get("cpu") == numerics.cpu():
        return figures, True
    return {key: figures[key] for key in body.get("vendor_free", ())}, False
